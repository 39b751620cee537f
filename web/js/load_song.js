// Load Song (SINGER) gets the frontend's own audio player + upload button, as LoadAudio has.
//
// The frontend adds its AUDIOUPLOAD widget to every node whose `audio` combo asks for
// `audio_upload` (extension Comfy.UploadAudio), but the `audioUI` player widget that the upload
// widget updates only to its own audio nodes (Comfy.AudioWidget keeps a list of class names).
// Without that widget the node cannot be built (frontend 1.27: a red box of UNKNOWN widgets;
// 1.58: createNode throws). Here the same `["AUDIO_UI", {}]` input is added to Load Song's
// definition, just before the `upload` entry: AUDIOUPLOAD looks the player up when it is built,
// so the player must come first. The player is never serialised (the frontend sets
// `serialize: false`), so the API prompt is unchanged.
import { app } from "../../../scripts/app.js";

const NODE_TYPES = new Set(["SingerLoadAudio"]);

/** Rebuild `required` so that `audioUI` sits after the node's own inputs and before `upload`. */
export function addAudioPlayerInput(nodeData) {
  const input = (nodeData.input ??= {});
  const required = (input.required ??= {});
  if (required.audioUI) return;
  const upload = required.upload;
  delete required.upload;
  required.audioUI = ["AUDIO_UI", {}];
  if (upload) required.upload = upload;
  if (Array.isArray(input.order?.required) || Array.isArray(nodeData.input_order?.required)) {
    for (const order of [input.order, nodeData.input_order]) {
      if (!Array.isArray(order?.required)) continue;
      const names = order.required.filter((name) => name !== "audioUI" && name !== "upload");
      names.push("audioUI");
      if (upload) names.push("upload");
      order.required = names;
    }
  }
}

app.registerExtension({
  name: "Singer.LoadSongPlayer",
  async beforeRegisterNodeDef(_nodeType, nodeData) {
    if (NODE_TYPES.has(nodeData?.name)) addAudioPlayerInput(nodeData);
  },
});
