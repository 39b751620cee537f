// Waveform preview with a play button on the pack's audio nodes. A node opts in by sending a
// `singer_audio` ui payload ([{filename, subfolder, type, label, ...}], nodes/web_preview.py
// audio_preview_ui); the widget appears on the first such payload. The file is decoded with
// WebAudio for the waveform and played by an <audio> element; click the waveform to seek.
import { app } from "../../../scripts/app.js";
import {
  BUTTON_STYLE, addPreviewWidget, chainCallback, el, fitCanvas, isSingerNodeDef, viewUrl,
} from "./singer_common.js";

const PAYLOAD_KEY = "singer_audio";
const WIDGET_NAME = "singer_audio_preview";
const COLUMNS = 2048; // waveform resolution (min/max pairs over all channels)

function formatTime(seconds) {
  if (!Number.isFinite(seconds)) return "0:00.0";
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

/** Min/max per column over all channels of a decoded AudioBuffer: Float32Array [min0, max0, min1, ...]. */
function waveformPeaks(buffer, columns) {
  const peaks = new Float32Array(columns * 2);
  const length = buffer.length;
  for (let column = 0; column < columns; column += 1) {
    peaks[column * 2] = 1;
    peaks[column * 2 + 1] = -1;
  }
  for (let channel = 0; channel < buffer.numberOfChannels; channel += 1) {
    const data = buffer.getChannelData(channel);
    for (let column = 0; column < columns; column += 1) {
      const start = Math.floor((column * length) / columns);
      const stop = Math.max(start + 1, Math.floor(((column + 1) * length) / columns));
      let low = peaks[column * 2];
      let high = peaks[column * 2 + 1];
      for (let index = start; index < stop && index < length; index += 1) {
        const value = data[index];
        if (value < low) low = value;
        if (value > high) high = value;
      }
      peaks[column * 2] = low;
      peaks[column * 2 + 1] = high;
    }
  }
  return peaks;
}

class AudioPreview {
  constructor(node) {
    this.node = node;
    this.entries = [];
    this.index = 0;
    this.peaks = null;
    this.duration = 0;
    this.error = null;
    this.ready = Promise.resolve(false);
    this.drawCount = 0;

    this.element = el("div", {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", background: "#181818", borderRadius: "4px", padding: "4px",
    });
    this.element.className = "singer-audio-preview";
    const bar = el("div", { display: "flex", gap: "6px", alignItems: "center" });
    this.playButton = el("button", { ...BUTTON_STYLE, minWidth: "54px" }, { textContent: "▶ play" });
    this.playButton.addEventListener("click", (event) => { event.stopPropagation(); this.toggle(); });
    this.select = el("select", { ...BUTTON_STYLE, display: "none" });
    this.select.addEventListener("change", () => this.load(Number(this.select.value)));
    this.timeLabel = el("span", { color: "#aaa", font: "11px monospace", marginLeft: "auto" });
    bar.append(this.playButton, this.select, this.timeLabel);
    this.canvas = el("canvas", { width: "100%", flex: "1 1 auto", minHeight: "0", cursor: "pointer" });
    this.canvas.addEventListener("pointerdown", (event) => {
      event.stopPropagation();
      if (!this.duration) return;
      const rect = this.canvas.getBoundingClientRect();
      const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
      this.audio.currentTime = fraction * this.duration;
      this.draw();
    });
    this.audio = el("audio", { display: "none" }, { preload: "auto" });
    this.audio.addEventListener("play", () => {
      this.playButton.textContent = "❚❚ pause";
      this.#tick();
    });
    this.audio.addEventListener("pause", () => { this.playButton.textContent = "▶ play"; this.draw(); });
    this.audio.addEventListener("ended", () => { this.playButton.textContent = "▶ play"; this.draw(); });
    this.audio.addEventListener("loadedmetadata", () => {
      if (Number.isFinite(this.audio.duration)) this.duration = this.audio.duration;
      this.draw();
    });
    this.element.append(bar, this.canvas, this.audio);
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  #tick() {
    this.draw();
    if (!this.audio.paused) requestAnimationFrame(() => this.#tick());
  }

  toggle() {
    if (!this.audio.src) return;
    if (this.audio.paused) {
      this.audio.play().catch((error) => console.warn(`[SINGER] audio preview cannot play: ${error}`));
    } else {
      this.audio.pause();
    }
  }

  show(entries) {
    this.entries = entries;
    this.select.replaceChildren(...entries.map((entry, index) =>
      el("option", {}, { value: String(index), textContent: entry.label ?? `audio ${index}` })));
    this.select.style.display = entries.length > 1 ? "" : "none";
    return this.load(Math.min(this.index, entries.length - 1));
  }

  /** Play entry `index` and draw its waveform; resolves to true once the waveform is drawn. */
  load(index) {
    this.index = index;
    this.select.value = String(index);
    const entry = this.entries[index];
    const url = viewUrl(entry);
    this.audio.pause();
    this.audio.src = url;
    this.peaks = null;
    this.error = null;
    this.duration = entry.seconds ?? 0;
    this.draw();
    this.ready = fetch(url)
      .then((response) => {
        if (!response.ok) throw new Error(`GET ${entry.filename} answered ${response.status}`);
        return response.arrayBuffer();
      })
      .then((bytes) => {
        // decode at the file's own rate when known, so the waveform shows its samples, not a resampling
        const rate = entry.sample_rate >= 3000 && entry.sample_rate <= 768000 ? entry.sample_rate : 44100;
        return new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes);
      })
      .then((buffer) => {
        if (this.index !== index) return false;
        this.peaks = waveformPeaks(buffer, COLUMNS);
        this.duration = buffer.duration;
        this.draw();
        return true;
      })
      .catch((error) => {
        this.error = `could not decode ${entry.filename}: ${error?.message ?? error}`;
        console.warn(`[SINGER] ${this.error}`);
        this.draw();
        return false;
      });
    return this.ready;
  }

  draw() {
    const [width, height] = fitCanvas(this.canvas, [400, 80]);
    const context = this.canvas.getContext("2d");
    context.fillStyle = "#101418";
    context.fillRect(0, 0, width, height);
    const position = this.duration ? this.audio.currentTime / this.duration : 0;
    this.timeLabel.textContent = `${formatTime(this.audio.currentTime)} / ${formatTime(this.duration)}`;
    const middle = height / 2;
    if (!this.peaks) {
      context.fillStyle = "#888";
      context.font = "12px sans-serif";
      context.textAlign = "center";
      const text = this.error ?? (this.entries.length ? "decoding…" : "no audio yet");
      context.fillText(text, width / 2, middle + 4);
      return;
    }
    const columns = this.peaks.length / 2;
    const played = position * width;
    for (let x = 0; x < width; x += 1) {
      const column = Math.min(columns - 1, Math.floor((x / width) * columns));
      const low = this.peaks[column * 2];
      const high = this.peaks[column * 2 + 1];
      const top = middle - Math.max(high, 0) * (middle - 2);
      const bottom = middle - Math.min(low, 0) * (middle - 2);
      context.fillStyle = x < played ? "#5fb3ff" : "#3b7a57";
      context.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
    context.fillStyle = "#ffffff";
    context.fillRect(Math.min(width - 1, played), 0, 1, height);
    this.drawCount += 1;
  }

  remove() {
    this.audio.pause();
    this.audio.removeAttribute("src");
  }
}

app.registerExtension({
  name: "Singer.AudioPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isSingerNodeDef(nodeData)) return;
    chainCallback(nodeType.prototype, "onExecuted", function (output) {
      const entries = output?.[PAYLOAD_KEY];
      if (!Array.isArray(entries) || !entries.length) return;
      if (!this.singerAudioPreview) {
        const preview = new AudioPreview(this);
        this.singerAudioPreview = preview;
        const widget = addPreviewWidget(this, WIDGET_NAME, preview.element,
          { minHeight: 110, minWidth: 320 });
        chainCallback(widget, "onRemove", () => preview.remove());
      }
      this.singerAudioPreview.show(entries);
    });
  },
});
