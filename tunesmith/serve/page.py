"""The page at `/`: try the model in a browser. One self-contained HTML file (inline CSS and script, no
CDN), shaped by what one input is (GET /v1/info "input"): a text box, a file upload with a preview, or a
chat window; answers are the same objects as POST /v1/predict: a label with score bars, a transcript,
a reply."""

from __future__ import annotations

import html
import json
from typing import Any

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.3rem} .muted{color:#666;font-size:.9rem} textarea{width:100%;min-height:5rem;font:inherit}
button{display:block;font:inherit;padding:.35rem 1rem;margin:.75rem 0} #answer{margin:1rem 0}
label{display:block;font-weight:600;margin:.5rem 0 .25rem}
.bar{display:flex;align-items:center;gap:.5rem;margin:.15rem 0}.bar .name{width:10rem;overflow:hidden}
.bar .fill{background:#3b7dd8;height:.9rem} .label{font-size:1.2rem;font-weight:600}
.msg{margin:.3rem 0;padding:.4rem .6rem;border-radius:.4rem;white-space:pre-wrap}
.user{background:#eef} .assistant{background:#efe} .error{color:#b00020}
#preview{max-width:16rem;max-height:16rem;display:none;margin:.5rem 0}
#listen{display:none;margin:.5rem 0} pre{white-space:pre-wrap}
</style></head><body>
<h1>__TITLE__</h1>
<p class="muted">__DESCRIPTION__ &middot; <a href="/docs">API</a> &middot; <a href="/v1/info">info</a></p>
<form id="form">__FORM__<button type="submit" id="submit">__BUTTON__</button></form>
<div id="answer" aria-live="polite"></div>
<details><summary>Model card</summary><pre>__CARD__</pre></details>
<script>
const INFO = __INFO__;
const form = document.getElementById("form"), answer = document.getElementById("answer");
let conversation = [];
function show(html) { answer.innerHTML = html; }
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
function render(p) {
  if (p.label !== undefined) {
    let out = '<div class="label" id="label">' + esc(p.label) + "</div>";
    const scores = Object.entries(p.scores || {}).sort((a, b) => b[1] - a[1]);
    for (const [k, v] of scores)
      out += '<div class="bar"><span class="name">' + esc(k) + '</span><div class="fill" style="width:'
        + (v * 20).toFixed(2) + 'rem"></div><span class="value">' + v.toFixed(3) + "</span></div>";
    return out;
  }
  return '<div class="label" id="label">' + esc(p.text ?? p.transcript ?? JSON.stringify(p)) + "</div>";
}
async function ask(input) {
  const r = await fetch("/v1/predict", {method: "POST", headers: {"content-type": "application/json"},
                                        body: JSON.stringify({inputs: [input]})});
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && (body.error.field + ": " + body.error.message)) || r.statusText);
  return body.predictions[0];
}
function readFile(file) {
  return new Promise((ok, fail) => { const f = new FileReader(); f.onload = () => ok(f.result);
                                     f.onerror = fail; f.readAsDataURL(file); });
}
const file = document.getElementById("file");
if (file) file.addEventListener("change", async () => {
  // a preview the browser can show: an image, or a player for a clip (by the chosen file's own type)
  const chosen = file.files[0], img = document.getElementById("preview"), clip = document.getElementById("listen");
  img.style.display = clip.style.display = "none"; show("");
  if (!chosen) return;
  const url = await readFile(chosen), type = chosen.type.split("/")[0];
  if (type === "image") { img.src = url; img.style.display = "block"; }
  if (type === "audio") { clip.src = url; clip.style.display = "block"; }
});
const button = document.getElementById("submit");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  button.disabled = true;  // one request at a time from this page
  try {
    if (INFO.input === "file") {
      if (!file.files[0]) return show('<p class="error">Choose a file first.</p>');
      show("…"); show(render(await ask(await readFile(file.files[0]))));
    } else if (INFO.input === "messages") {
      const box = document.getElementById("box"), text = box.value.trim();
      if (!text) return;
      conversation.push({role: "user", content: text}); box.value = "";
      const reply = {role: "assistant", content: ""};
      const draw = (messages) => show(messages.map(
        m => '<div class="msg ' + m.role + '">' + esc(m.content || "…") + "</div>").join(""));
      draw([...conversation, reply]);
      // streamed: server-sent events from the OpenAI-compatible endpoint, drawn as they arrive
      const r = await fetch("/v1/chat/completions", {method: "POST", headers: {"content-type": "application/json"},
                                                     body: JSON.stringify({messages: conversation, stream: true})});
      if (!r.ok) { const b = await r.json(); conversation.pop();
                   throw new Error(b.error ? b.error.field + ": " + b.error.message : r.statusText); }
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        const events = buffer.split("\n\n"); buffer = events.pop();
        for (const ev of events) {
          const data = ev.replace(/^data: /, "");
          if (data === "[DONE]") continue;
          reply.content += JSON.parse(data).choices[0].delta.content || "";
          draw([...conversation, reply]);
        }
      }
      reply.content = reply.content.trim();
      conversation.push(reply); draw(conversation);  // the reply once, now part of the conversation
    } else {
      const text = document.getElementById("box").value;
      if (!text.trim()) return;
      show("…"); show(render(await ask(text)));
    }
  } catch (err) { show('<p class="error">' + esc(err.message) + "</p>"); }
  finally { button.disabled = false; }
});
</script></body></html>
"""

# one form per request_kind; ids (#box, #file, #preview, #submit, #answer, #label) and labels are what
# tests/test_serve_browser.py selects by
FORMS = {
    "string": (
        '<label for="box">Input text</label><textarea id="box" name="inputs" placeholder="__EXAMPLE__"></textarea>',
        "Predict",
    ),
    "file": (
        '<label for="file">Input file</label><input type="file" id="file" name="inputs" accept="__ACCEPT__">'
        '<img id="preview" alt="preview of the chosen file"><audio id="listen" controls></audio>',
        "Predict",
    ),
    "messages": (
        '<label for="box">Message</label><textarea id="box" name="inputs" placeholder="__EXAMPLE__"></textarea>',
        "Send",
    ),
}


def render(info: dict[str, Any]) -> str:
    form, button = FORMS[info["input"]]
    labels = f"{len(info['labels'])} labels" if info["labels"] else info["output"]
    description = f"{info['task']} · {labels} · fine-tuned from {info['base_model']}"
    card = info.get("card") or "(no model card in the run folder)"
    slim = {k: v for k, v in info.items() if k != "card"}
    return (
        PAGE.replace(
            "__FORM__",
            form.replace("__EXAMPLE__", html.escape(str(info["example_input"]))).replace(
                "__ACCEPT__", html.escape(",".join(info["media_types"]))
            ),
        )
        .replace("__BUTTON__", button)
        .replace("__TITLE__", html.escape(f"tunesmith · {info['task']}"))
        .replace("__DESCRIPTION__", html.escape(description))
        .replace("__CARD__", html.escape(card))
        .replace("__INFO__", json.dumps(slim).replace("</", "<\\/"))
    )
