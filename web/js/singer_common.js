// Shared by the SINGER web extensions (subband_viewer.js, audio_preview.js, video_preview.js):
// /view URLs of preview files, hook chaining, and a DOM widget that is never serialised.
// No extension is registered here; importing this module has no side effects.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

/** True for the pack's node definitions (ids start with "Singer"). */
export function isSingerNodeDef(nodeData) {
  return typeof nodeData?.name === "string" && nodeData.name.startsWith("Singer");
}

/** The /view URL of a preview entry {filename, subfolder, type} the server wrote. */
export function viewUrl(entry) {
  const params = new URLSearchParams({
    filename: entry.filename,
    subfolder: entry.subfolder ?? "",
    type: entry.type ?? "temp",
  });
  const rand = typeof app.getRandParam === "function" ? app.getRandParam() : `&rand=${Math.random()}`;
  return api.apiURL(`/view?${params.toString()}${rand}`);
}

/** Replace object[property] with a function that calls the original first, then `callback`
 *  (same `this` and arguments); the original's return value is kept. */
export function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

/** Add `element` to `node` as a DOM widget that is left out of the workflow's widgets_values and of
 *  the API prompt, so adding it never shifts the node's real widget values. */
export function addPreviewWidget(node, name, element, { minHeight = 160, minWidth = 320 } = {}) {
  const widget = node.addDOMWidget(name, "singer_preview", element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
  });
  widget.serialize = false;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], minWidth, size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
  return widget;
}

/** A small styled element. */
export function el(tag, style = {}, props = {}) {
  const element = document.createElement(tag);
  Object.assign(element.style, style);
  Object.assign(element, props);
  return element;
}

export const BUTTON_STYLE = {
  background: "#333",
  color: "#ddd",
  border: "1px solid #555",
  borderRadius: "4px",
  padding: "1px 6px",
  font: "11px sans-serif",
  cursor: "pointer",
};

/** Style a toggle button as on/off. */
export function setToggle(button, on) {
  button.dataset.on = on ? "1" : "0";
  button.style.background = on ? "#2d6cdf" : "#333";
  button.style.color = on ? "#fff" : "#999";
}

/** Size a canvas to its CSS box times the device pixel ratio; returns [width, height] in CSS pixels
 *  (a fallback size while the element is not laid out). */
export function fitCanvas(canvas, fallback = [400, 200]) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || fallback[0];
  const height = canvas.clientHeight || fallback[1];
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return [width, height];
}
