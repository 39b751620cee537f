// Interactive Haar sub-band viewer on "Wavelet Sub-bands (SINGER)": shows the node's grid image
// cell by cell from its `singer_subbands` ui payload (nodes/spectral.py), with band (LL/LH/HL/HH)
// and level toggles, wheel zoom around the cursor, drag to pan, double-click to reset.
import { app } from "../../../scripts/app.js";
import {
  BUTTON_STYLE, addPreviewWidget, chainCallback, el, fitCanvas, setToggle, viewUrl,
} from "./singer_common.js";

const NODE_TYPE = "SingerWaveletSubbands";
const PAYLOAD_KEY = "singer_subbands";
const WIDGET_NAME = "singer_subband_viewer";
const BANDS = ["LL", "LH", "HL", "HH"];
const GAP = 6; // CSS pixels between cells at zoom 1 (scaled with the view)
const LABEL = 14; // caption height in CSS pixels (not scaled)
const MIN_ZOOM = 0.25;
const MAX_ZOOM = 64;

class SubbandViewer {
  constructor(node) {
    this.node = node;
    this.entries = []; // payload entries, one per batch item
    this.images = []; // HTMLImageElement per entry
    this.item = 0;
    this.bands = new Set(BANDS);
    this.levels = new Set([1, 2, 3, 4, 5, 6]);
    this.zoom = 1;
    this.pan = [0, 0];
    this.layout = { levels: [], bands: [] }; // what the last draw showed
    this.drawCount = 0;
    this.error = null;
    this.ready = Promise.resolve(false);

    this.element = el("div", {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", background: "#181818", borderRadius: "4px", padding: "4px",
    });
    this.element.className = "singer-subband-viewer";
    this.toolbar = el("div", { display: "flex", flexWrap: "wrap", gap: "3px", alignItems: "center" });
    this.bandButtons = BANDS.map((band) => this.#toggleButton(band, () => this.#flip(this.bands, band)));
    this.levelBox = el("span", { display: "inline-flex", gap: "3px" });
    this.itemSelect = el("select", { ...BUTTON_STYLE, display: "none" });
    this.itemSelect.addEventListener("change", () => {
      this.item = Number(this.itemSelect.value);
      this.draw();
    });
    const fit = el("button", BUTTON_STYLE,
      { textContent: "fit", title: "Reset zoom and pan (double-click)" });
    fit.addEventListener("click", () => this.resetView());
    this.zoomLabel = el("span", { color: "#999", font: "11px sans-serif", marginLeft: "auto" });
    this.toolbar.append(...this.bandButtons, el("span", { width: "6px" }), this.levelBox, this.itemSelect,
      fit, this.zoomLabel);
    this.canvas = el("canvas", { width: "100%", flex: "1 1 auto", minHeight: "0", cursor: "grab",
      imageRendering: "pixelated" });
    this.element.append(this.toolbar, this.canvas);
    this.#bindPointer();
    new ResizeObserver(() => this.draw()).observe(this.canvas);
    this.draw();
  }

  #toggleButton(text, onClick) {
    const button = el("button", BUTTON_STYLE, { textContent: text });
    setToggle(button, true);
    button.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
    return button;
  }

  #flip(set, value) {
    if (set.has(value)) set.delete(value); else set.add(value);
    this.#syncButtons();
    this.draw();
  }

  #syncButtons() {
    this.bandButtons.forEach((button, index) => setToggle(button, this.bands.has(BANDS[index])));
    for (const button of this.levelBox.children) {
      setToggle(button, this.levels.has(Number(button.dataset.level)));
    }
  }

  /** Show or hide a band ("LL", "LH", "HL", "HH") or a level (1-based). */
  setBand(band, on) {
    if (on) this.bands.add(band); else this.bands.delete(band);
    this.#syncButtons();
    this.draw();
  }

  setLevel(level, on) {
    if (on) this.levels.add(level); else this.levels.delete(level);
    this.#syncButtons();
    this.draw();
  }

  resetView() { this.zoom = 1; this.pan = [0, 0]; this.draw(); }

  /** Zoom by `factor` keeping the canvas point (x, y) (CSS pixels) in place. */
  zoomAt(factor, x, y) {
    const next = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.zoom * factor));
    const [width, height] = [this.canvas.clientWidth || 400, this.canvas.clientHeight || 200];
    const ratio = next / this.zoom;
    const dx = x - width / 2;
    const dy = y - height / 2;
    this.pan = [dx - (dx - this.pan[0]) * ratio, dy - (dy - this.pan[1]) * ratio];
    this.zoom = next;
    this.draw();
  }

  #bindPointer() {
    const canvas = this.canvas;
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      event.stopPropagation();
      const rect = canvas.getBoundingClientRect();
      this.zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    let drag = null;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.stopPropagation();
      drag = { x: event.clientX, y: event.clientY, pan: [...this.pan] };
      canvas.setPointerCapture?.(event.pointerId);
      canvas.style.cursor = "grabbing";
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drag) return;
      event.stopPropagation();
      this.pan = [drag.pan[0] + event.clientX - drag.x, drag.pan[1] + event.clientY - drag.y];
      this.draw();
    });
    const stop = (event) => {
      if (!drag) return;
      drag = null;
      canvas.releasePointerCapture?.(event.pointerId);
      canvas.style.cursor = "grab";
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("dblclick", (event) => { event.stopPropagation(); this.resetView(); });
  }

  /** Load a `singer_subbands` payload; resolves to true once the images are drawn. */
  show(entries) {
    this.entries = entries;
    this.error = null;
    this.item = Math.min(this.item, entries.length - 1);
    const levels = Math.max(...entries.map((entry) => entry.levels ?? 1));
    this.levelBox.replaceChildren(...Array.from({ length: levels }, (_, index) => {
      const button = this.#toggleButton(`L${index + 1}`, () => this.#flip(this.levels, index + 1));
      button.dataset.level = String(index + 1);
      return button;
    }));
    this.itemSelect.replaceChildren(...entries.map((entry, index) =>
      el("option", {}, { value: String(index), textContent: `item ${entry.item ?? index}` })));
    this.itemSelect.style.display = entries.length > 1 ? "" : "none";
    this.itemSelect.value = String(this.item);
    this.#syncButtons();
    this.images = entries.map((entry) => {
      const image = new Image();
      image.src = viewUrl(entry);
      return image;
    });
    this.ready = Promise.all(this.images.map((image) => image.decode())).then(
      () => { this.draw(); return true; },
      (error) => {
        this.error = `could not load the sub-band image: ${error?.message ?? error}`;
        console.warn(`[SINGER] ${this.error}`);
        this.draw();
        return false;
      });
    this.draw();
    return this.ready;
  }

  draw() {
    const [width, height] = fitCanvas(this.canvas);
    const context = this.canvas.getContext("2d");
    context.fillStyle = "#181818";
    context.fillRect(0, 0, width, height);
    this.zoomLabel.textContent = `${Math.round(this.zoom * 100)}%`;
    const entry = this.entries[this.item];
    const image = this.images[this.item];
    const message = (text) => {
      context.fillStyle = "#888";
      context.font = "12px sans-serif";
      context.textAlign = "center";
      context.fillText(text, width / 2, height / 2);
      this.layout = { levels: [], bands: [] };
    };
    if (this.error) return message(this.error);
    if (!entry) return message("Queue the prompt to see the sub-bands");
    if (!image?.complete || !image.naturalWidth) return message("loading…");

    const cells = entry.cells.filter((cell) => this.bands.has(cell.band) && this.levels.has(cell.level));
    const levels = [...new Set(cells.map((cell) => cell.level))].sort((a, b) => a - b);
    const bands = BANDS.filter((band) => cells.some((cell) => cell.band === band));
    if (!cells.length) return message("no band or level selected");
    const cellW = cells[0].w;
    const cellH = cells[0].h;
    const contentW = bands.length * cellW + (bands.length - 1) * GAP;
    const contentH = levels.length * cellH + (levels.length - 1) * GAP; // scaled part; captions are not
    const captions = LABEL * levels.length;
    const fit = Math.max(1e-3, Math.min((width - 8) / contentW, (height - 8 - captions) / contentH));
    const scale = fit * this.zoom;
    const left = width / 2 + this.pan[0] - (contentW * scale) / 2;
    const top = height / 2 + this.pan[1] - (contentH * scale + captions) / 2;

    context.imageSmoothingEnabled = false;
    context.font = "11px sans-serif";
    context.textAlign = "left";
    context.textBaseline = "bottom";
    for (const cell of cells) {
      const column = bands.indexOf(cell.band);
      const row = levels.indexOf(cell.level);
      const x = left + column * (cellW + GAP) * scale;
      const y = top + row * ((cellH + GAP) * scale + LABEL) + LABEL;
      context.drawImage(image, cell.x, cell.y, cell.w, cell.h, x, y, cellW * scale, cellH * scale);
      context.fillStyle = "#ddd";
      context.fillText(`L${cell.level} ${cell.band} (${cell.name})`, x + 2, y - 2);
    }
    this.layout = { levels, bands };
    this.drawCount += 1;
  }
}

app.registerExtension({
  name: "Singer.SubbandViewer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      const viewer = new SubbandViewer(this);
      this.singerSubbandViewer = viewer;
      addPreviewWidget(this, WIDGET_NAME, viewer.element, { minHeight: 240, minWidth: 420 });
    });
    chainCallback(nodeType.prototype, "onExecuted", function (output) {
      const entries = output?.[PAYLOAD_KEY];
      if (Array.isArray(entries) && entries.length) this.singerSubbandViewer?.show(entries);
    });
  },
});
