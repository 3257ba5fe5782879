"""The page at ``GET /``: live frames and results with a camera, an upload form always.

One self-contained HTML file (no external scripts or styles, so it works on a
Pi with no internet). The page holds no data, so it is served without a token;
the token comes in the URL's fragment (``/#token=T``, never sent to the server nor
kept in the address bar or history: the page takes it out at once and keeps it for
the tab) or, from older links, its query (``/?token=T``), and is passed on to every
request the page makes.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>henet-edge serve</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 1.2em; color: #222; max-width: 60em; }
 h1 { font-size: 1.3em; margin: 0 0 .2em; }
 #model { color: #555; margin: 0 0 1em; }
 .row { display: flex; gap: 1.5em; flex-wrap: wrap; align-items: flex-start; }
 #frame { width: 256px; height: auto; min-height: 192px; background: #eee;
          image-rendering: pixelated; }
 .panel { flex: 1; min-width: 16em; overflow-wrap: anywhere; }
 ol { padding-left: 1.3em; margin: .3em 0; }
 li span.bar { display: inline-block; height: .7em; background: #3b82f6; margin-left: .4em; }
 .muted { color: #666; } .bad { color: #b91c1c; font-weight: 600; }
 fieldset { border: 1px solid #ccc; margin-top: 1.2em; }
</style></head>
<body>
<h1>henet-edge serve</h1>
<p id="model">loading model info...</p>
<section id="live" hidden>
 <div class="row">
  <img id="frame" alt="live camera frame">
  <div class="panel">
   <div>camera <b id="camera-source"></b>: <span id="camera-status">starting</span></div>
   <ol id="live-top"></ol>
   <div id="live-timings" class="muted"></div>
   <div id="live-fps" class="muted"></div>
  </div>
 </div>
</section>
<fieldset id="upload"><legend>Classify an image</legend>
 <form id="upload-form">
  <input type="file" id="file" name="file" accept="image/*">
  <button id="upload-button">Classify</button>
 </form>
 <ol id="upload-top"></ol>
 <div id="upload-timings" class="muted"></div>
</fieldset>
<script>
const token = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get('token')
    || new URLSearchParams(location.search).get('token');
  if (given) {
    sessionStorage.setItem('henet-token', given);
    history.replaceState(null, '', location.pathname);  // out of the address bar
  }
  return given || sessionStorage.getItem('henet-token');
})();
const q = token ? '?token=' + encodeURIComponent(token) : '';
const $ = id => document.getElementById(id);
const ms = t => Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(2)} ms`).join(' · ');
function showTop(el, top) {
  el.replaceChildren(...top.map(t => {
    const li = document.createElement('li');
    li.textContent = `${t.label} ${(100 * t.probability).toFixed(1)} %`;
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${Math.round(120 * t.probability)}px`;
    li.append(bar);
    return li;
  }));
}
function showCamera(s) {
  $('camera-source').textContent = s.source;
  const el = $('camera-status');
  el.textContent = s.state + (s.error ? `: ${s.error}` : '');
  el.className = s.state === 'failed' ? 'bad' : '';
}
fetch('/api/info' + q).then(r => r.json()).then(i => {
  $('model').textContent = [i.bundle_name || i.model, i.precision, i.runtime,
    i.runtime_version, i.delegate].filter(Boolean).join(' · ');
  if (!i.camera) return;
  $('live').hidden = false;
  $('frame').src = '/stream.mjpg' + q;
  const events = new EventSource('/api/stream' + q);
  events.onmessage = e => {
    const r = JSON.parse(e.data);
    showTop($('live-top'), r.top);
    $('live-timings').textContent = ms(r.timings_ms);
    $('live-fps').textContent = `frame ${r.frame} · ${r.fps.toFixed(1)} fps`;
  };
  events.addEventListener('camera', e => showCamera(JSON.parse(e.data)));
  setInterval(() => fetch('/healthz' + q).then(r => r.json())
    .then(h => h.camera && showCamera(h.camera)).catch(() => {
      $('camera-status').textContent = 'server unreachable';
      $('camera-status').className = 'bad';
    }), 2000);
});
$('upload-form').onsubmit = async e => {
  e.preventDefault();
  const file = $('file').files[0];
  if (!file) return;
  const form = new FormData();
  form.append('file', file);
  const r = await fetch('/api/classify' + q, {method: 'POST', body: form});
  const j = await r.json();
  if (j.ok) {
    showTop($('upload-top'), j.top);
    $('upload-timings').textContent = `${file.name}: ` + ms(j.timings_ms);
  } else {
    $('upload-top').replaceChildren();
    $('upload-timings').textContent = 'error: ' + j.error;
  }
};
</script></body></html>
"""
