// Inline video preview with sound on the pack's video nodes. A node opts in by sending a
// `singer_video` ui payload ([{filename, subfolder, type, label, fps, frames, width, height}],
// nodes/web_preview.py video_preview_ui: an H.264/AAC mp4 in ComfyUI's temp folder); the
// widget, a <video controls> element, appears on the first such payload.
import { app } from "../../../scripts/app.js";
import {
  BUTTON_STYLE, addPreviewWidget, chainCallback, el, isSingerNodeDef, viewUrl,
} from "./singer_common.js";

const PAYLOAD_KEY = "singer_video";
const WIDGET_NAME = "singer_video_preview";

class VideoPreview {
  constructor(node) {
    this.node = node;
    this.entries = [];
    this.index = 0;
    this.error = null;
    this.element = el("div", {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", background: "#181818", borderRadius: "4px", padding: "4px",
    });
    this.element.className = "singer-video-preview";
    const bar = el("div", { display: "flex", gap: "6px", alignItems: "center" });
    this.select = el("select", { ...BUTTON_STYLE, display: "none" });
    this.select.addEventListener("change", () => this.load(Number(this.select.value)));
    this.info = el("span", { color: "#aaa", font: "11px sans-serif" });
    bar.append(this.select, this.info);
    this.video = el("video", {
      width: "100%", flex: "1 1 auto", minHeight: "0", objectFit: "contain", background: "#000",
    }, { controls: true, preload: "metadata", playsInline: true, loop: false });
    // Keep clicks on the player's controls from starting a node drag on the graph canvas.
    this.video.addEventListener("pointerdown", (event) => event.stopPropagation());
    this.video.addEventListener("error", () => {
      const code = this.video.error?.code;
      this.error = `cannot play ${this.entries[this.index]?.filename ?? "the preview"} (media error ${code})`;
      this.info.textContent = this.error;
      console.warn(`[SINGER] ${this.error}`);
    });
    this.element.append(bar, this.video);
  }

  show(entries) {
    this.entries = entries;
    this.select.replaceChildren(...entries.map((entry, index) =>
      el("option", {}, { value: String(index), textContent: entry.label ?? `video ${index}` })));
    this.select.style.display = entries.length > 1 ? "" : "none";
    this.load(Math.min(this.index, entries.length - 1));
  }

  load(index) {
    this.index = index;
    this.select.value = String(index);
    const entry = this.entries[index];
    this.error = null;
    const parts = [];
    if (entry.width && entry.height) parts.push(`${entry.width}×${entry.height}`);
    if (entry.frames && entry.fps) parts.push(`${entry.frames} frames @ ${Number(entry.fps).toFixed(2)} fps`);
    if (entry.has_audio === false) parts.push("no sound");
    this.info.textContent = parts.join(" · ");
    this.video.src = viewUrl(entry);
    this.video.load();
  }

  remove() {
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
  }
}

app.registerExtension({
  name: "Singer.VideoPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isSingerNodeDef(nodeData)) return;
    chainCallback(nodeType.prototype, "onExecuted", function (output) {
      const entries = output?.[PAYLOAD_KEY];
      if (!Array.isArray(entries) || !entries.length) return;
      if (!this.singerVideoPreview) {
        const preview = new VideoPreview(this);
        this.singerVideoPreview = preview;
        const widget = addPreviewWidget(this, WIDGET_NAME, preview.element,
          { minHeight: 260, minWidth: 320 });
        chainCallback(widget, "onRemove", () => preview.remove());
      }
      this.singerVideoPreview.show(entries);
    });
  },
});
