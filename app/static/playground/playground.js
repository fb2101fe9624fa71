// layerlab playground: plain JavaScript, no build step, no library. It calls the public API like
// any client: GET /v1/layers (kinds, config schemas, defaults), POST /v1/shapes (the live shape
// table) and POST /v1/sequential (Run, every layer's output). The whole state lives in the URL
// fragment (#state=<base64url JSON>), so a link reproduces the view. CSP-friendly: no inline
// script, no eval, no style attributes in markup (element.style is set through the CSSOM only).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "layerlab-api-key";
  const MAX_MAPS = 64;            // feature maps drawn per layer
  const MAX_SIDE = 512;           // uploaded images larger than this need the resize option
  const LINK_IMAGE_SIDE = 128;    // uploaded images up to this size travel in the share link
  const MAX_JSON_IN_LINK = 20000; // characters of pasted JSON kept in the share link
  const NOTEBOOK_STACK = [
    { kind: "conv2d", values: { in_channels: "3", out_channels: "16", kernel_size: "3", stride: "2" } },
    { kind: "relu", values: {} },
    { kind: "maxpool2d", values: { kernel_size: "(3, 2)" } },
  ];

  // ---------------------------------------------------------------- colour map
  // Viridis (matplotlib's control points), 256 levels. A value v of a map drawn with range
  // [min, max] (the canvas's data-min / data-max) gets level round((v - min) / (max - min) * 255),
  // so a drawn pixel can be read back to a value within (max - min) / 510.
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  const LUT = [];
  for (let level = 0; level < 256; level++) {
    const t = (level / 255) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(t), VIRIDIS.length - 2);
    const f = t - i;
    LUT.push([0, 1, 2].map((c) => Math.round(VIRIDIS[i][c] + f * (VIRIDIS[i + 1][c] - VIRIDIS[i][c]))));
  }
  // 256 distinct colours, so that each drawn colour stands for one level: where rounding made two
  // neighbours equal, the later one's blue moves by one.
  const seenColours = new Set();
  for (const colour of LUT) {
    while (seenColours.has(String(colour))) colour[2] += colour[2] < 255 ? 1 : -1;
    seenColours.add(String(colour));
  }
  const NAN_COLOUR = [255, 0, 255];

  function level(value, min, max) {
    if (!(max > min)) return 0;
    return Math.max(0, Math.min(255, Math.round(((value - min) / (max - min)) * 255)));
  }

  // ---------------------------------------------------------------- state
  let kinds = {};        // kind -> entry of GET /v1/layers
  let kindOrder = [];
  let lastResult = null; // the last /v1/sequential response
  let image = null;      // {width, height, pixels: Uint8Array RGB} of an uploaded picture
  const state = {
    source: "gradient",
    gen: { height: "120", width: "160", cell: "8", channels: "3", dist: "normal", seed: "0" },
    imageResize: true, imageMax: "128",
    json: "[[[[0, 0.5, 1], [1, 0.5, 0]]]]",
    layers: NOTEBOOK_STACK.map(copyLayer),
    seed: "0", backend: "torch", training: true, saliency: false,
    scale: "shared", ran: false,
  };

  function copyLayer(layer) { return { kind: layer.kind, values: Object.assign({}, layer.values) }; }

  // ---------------------------------------------------------------- API
  function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (apiKey()) headers["X-API-Key"] = apiKey();
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    if (!response.ok) {
      const error = new Error((payload && payload.detail) || `${method} ${path}: HTTP ${response.status}`);
      error.status = response.status;
      error.body = payload || {};
      throw error;
    }
    return payload;
  }

  function banner(text) {
    const el = $("banner");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function needKey(error) {
    if (error.status !== 401) return false;
    banner(`This server needs an API key: ${error.message} Enter it under "API key" at the top.`);
    $("key-box").open = true;
    $("api-key").focus();
    return true;
  }

  // ---------------------------------------------------------------- values
  function schemaOf(kind, name) { return kinds[kind].config_schema.properties[name] || {}; }
  function isBoolean(schema) { return schema.type === "boolean"; }
  function enumOf(schema) { return schema.enum && schema.type === "string" ? schema.enum : null; }

  // The text shown for a value: Python's spelling (None, tuples), as the PyTorch constructor takes it.
  function showValue(value) {
    if (value === null || value === undefined) return "None";
    if (Array.isArray(value)) return `(${value.map(showValue).join(", ")}${value.length === 1 ? "," : ""})`;
    return String(value);
  }

  // Text -> a JSON value. Anything that does not parse goes to the server as the text itself,
  // so the message about it is the server's own.
  function parseValue(text) {
    const t = text.trim();
    if (/^(none|null)$/i.test(t)) return null;
    if (/^true$/i.test(t)) return true;
    if (/^false$/i.test(t)) return false;
    const json = t.replace(/^\((.*)\)$/s, "[$1]").replace(/,\s*\]$/, "]");
    try { return JSON.parse(json); } catch (e) { return t; }
  }

  function layerConfig(layer) {
    const config = {};
    const properties = kinds[layer.kind] ? kinds[layer.kind].config_schema.properties : {};
    for (const name of Object.keys(properties)) {
      const raw = layer.values[name];
      if (raw === undefined) continue;
      if (typeof raw === "boolean") { config[name] = raw; continue; }
      if (String(raw).trim() === "") continue; // left empty: the server's default (or its "Field required")
      config[name] = enumOf(properties[name]) ? raw : parseValue(String(raw));
    }
    return config;
  }

  function defaultValues(kind) {
    const entry = kinds[kind];
    const values = {};
    for (const [name, schema] of Object.entries(entry.config_schema.properties)) {
      const has = Object.prototype.hasOwnProperty.call(entry.defaults, name);
      if (isBoolean(schema)) values[name] = has ? Boolean(entry.defaults[name]) : false;
      else values[name] = has ? showValue(entry.defaults[name]) : (schema.examples ? showValue(schema.examples[0]) : "");
    }
    return values;
  }

  // Every argument the layer has, with its default where the user (or a link) set nothing.
  function completeLayer(layer) {
    if (!kinds[layer.kind]) return layer;
    return { kind: layer.kind, values: Object.assign(defaultValues(layer.kind), layer.values) };
  }

  // ---------------------------------------------------------------- tensors
  function toBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(text);
  }

  function fromBase64(b64) {
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  // A response tensor ({shape, dtype, base64}) -> {shape, values} with a typed array (little-endian hosts).
  function decodeTensor(tensor) {
    if (!tensor || tensor.base64 === undefined) return null;
    const bytes = fromBase64(tensor.base64);
    const Type = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array }[tensor.dtype];
    const values = new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
    return { shape: tensor.shape, values, dtype: tensor.dtype };
  }

  function intOf(text, fallback) {
    const n = parseInt(text, 10);
    return Number.isFinite(n) ? n : fallback;
  }

  function generatedPixels(kind, height, width, cell) {
    const data = new Float32Array(3 * height * width);
    const plane = height * width;
    for (let i = 0; i < height; i++) {
      for (let j = 0; j < width; j++) {
        const k = i * width + j;
        if (kind === "gradient") {
          data[k] = width > 1 ? j / (width - 1) : 0;                         // red: left to right
          data[plane + k] = height > 1 ? i / (height - 1) : 0;               // green: top to bottom
          data[2 * plane + k] = height + width > 2 ? 1 - (i + j) / (height + width - 2) : 1; // blue: the diagonal
        } else {
          const on = (Math.floor(i / cell) + Math.floor(j / cell)) % 2;
          data[k] = on; data[plane + k] = 1 - on; data[2 * plane + k] = 0.5;
        }
      }
    }
    return data;
  }

  function nestedShape(value) {
    const shape = [];
    while (Array.isArray(value)) { shape.push(value.length); value = value[0]; }
    return shape;
  }

  // The input as the API takes it, its shape, and (when known here) its values for the preview.
  function currentInput() {
    const g = state.gen;
    const height = intOf(g.height, 1), width = intOf(g.width, 1);
    if (state.source === "gradient" || state.source === "checkerboard") {
      const values = generatedPixels(state.source, height, width, Math.max(1, intOf(g.cell, 8)));
      const shape = [1, 3, height, width];
      return { wire: { base64: toBase64(new Uint8Array(values.buffer)), shape, dtype: "float32" }, shape, values };
    }
    if (state.source === "random") {
      const shape = [1, intOf(g.channels, 3), height, width];
      return { wire: { random: g.dist, shape, seed: intOf(g.seed, 0) }, shape, values: null };
    }
    if (state.source === "image") {
      if (!image) return { error: "choose an image file first" };
      const plane = image.width * image.height;
      const values = new Float32Array(3 * plane);
      for (let k = 0; k < plane; k++) for (let c = 0; c < 3; c++) values[c * plane + k] = image.pixels[3 * k + c] / 255;
      const shape = [1, 3, image.height, image.width];
      return { wire: { base64: toBase64(new Uint8Array(values.buffer)), shape, dtype: "float32" }, shape, values };
    }
    let parsed;
    try { parsed = JSON.parse(state.json); } catch (e) { return { error: `the pasted text is not JSON: ${e.message}` }; }
    let shape = null, values = null;
    if (Array.isArray(parsed)) {
      shape = nestedShape(parsed);
      const flat = parsed.flat(Infinity);
      if (flat.every((v) => typeof v === "number")) values = Float32Array.from(flat);
    } else if (parsed && typeof parsed === "object" && Array.isArray(parsed.shape)) {
      shape = parsed.shape;
    } else if (typeof parsed === "number") {
      shape = [];
    }
    if (!shape) return { error: 'give nested arrays, or an object with "shape"' };
    return { wire: parsed, shape, values };
  }

  // ---------------------------------------------------------------- the stack editor
  function renderKinds() {
    const select = $("add-kind");
    select.textContent = "";
    for (const kind of kindOrder) {
      const option = document.createElement("option");
      option.value = kind;
      option.textContent = `nn.${kinds[kind].torch.replace("torch.nn.", "")} (${kind})`;
      select.appendChild(option);
    }
  }

  function button(text, label, onClick, className) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.title = label;
    if (className) b.className = className;
    b.addEventListener("click", onClick);
    return b;
  }

  function errorSlot(id) {
    const p = document.createElement("p");
    p.className = "field-error";
    p.id = id;
    p.setAttribute("role", "alert");
    p.hidden = true;
    return p;
  }

  function renderStack(focus) {
    const list = $("stack");
    list.textContent = "";
    state.layers.forEach((layer, index) => {
      const entry = kinds[layer.kind];
      const item = document.createElement("li");
      item.className = "layer";
      item.id = `layer-${index}`;
      const head = document.createElement("div");
      head.className = "layer-head";
      const title = document.createElement("h3");
      title.id = `layer-${index}-title`;
      title.textContent = `${index} · ${entry ? entry.torch.replace("torch.nn.", "nn.") : layer.kind}`;
      item.setAttribute("aria-labelledby", title.id);
      head.appendChild(title);
      const tools = document.createElement("div");
      tools.className = "layer-tools";
      tools.appendChild(button("↑", `Move layer ${index} up`, () => moveLayer(index, -1), "move-up"));
      tools.appendChild(button("↓", `Move layer ${index} down`, () => moveLayer(index, 1), "move-down"));
      tools.appendChild(button("✕", `Remove layer ${index}`, () => removeLayer(index), "remove"));
      head.appendChild(tools);
      item.appendChild(head);
      item.appendChild(errorSlot(`err-layers[${index}]`));
      const fields = document.createElement("div");
      fields.className = "fields";
      if (entry) {
        const required = entry.config_schema.required || [];
        for (const [name, schema] of Object.entries(entry.config_schema.properties)) {
          fields.appendChild(renderField(layer, index, name, schema, required.includes(name)));
        }
      }
      item.appendChild(fields);
      list.appendChild(item);
    });
    if (focus) {
      const target = document.querySelector(focus);
      if (target) target.focus();
    }
  }

  function renderField(layer, index, name, schema, required) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    const id = `layer-${index}-${name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = name + (required ? " *" : "");
    if (schema.description) label.title = schema.description;
    let control;
    if (isBoolean(schema)) {
      control = document.createElement("input");
      control.type = "checkbox";
      control.checked = Boolean(layer.values[name]);
      control.addEventListener("change", () => { layer.values[name] = control.checked; changed(); });
      wrap.classList.add("check");
      wrap.appendChild(control);
      wrap.appendChild(label);
    } else if (enumOf(schema)) {
      control = document.createElement("select");
      for (const choice of enumOf(schema)) {
        const option = document.createElement("option");
        option.value = option.textContent = choice;
        control.appendChild(option);
      }
      control.value = layer.values[name];
      control.addEventListener("change", () => { layer.values[name] = control.value; changed(); });
      wrap.appendChild(label);
      wrap.appendChild(control);
    } else {
      control = document.createElement("input");
      control.type = "text";
      control.spellcheck = false;
      control.autocomplete = "off";
      control.value = layer.values[name] === undefined ? "" : layer.values[name];
      control.addEventListener("input", () => { layer.values[name] = control.value; changed(); });
      wrap.appendChild(label);
      wrap.appendChild(control);
    }
    control.id = id;
    control.name = name;
    const error = errorSlot(`err-layers[${index}].config.${name}`);
    control.setAttribute("aria-describedby", error.id);
    wrap.appendChild(error);
    return wrap;
  }

  function addLayer(kind) {
    state.layers.push({ kind, values: defaultValues(kind) });
    renderStack(`#layer-${state.layers.length - 1} input, #layer-${state.layers.length - 1} select`);
    changed();
  }

  function moveLayer(index, step) {
    const to = index + step;
    if (to < 0 || to >= state.layers.length) return;
    const [layer] = state.layers.splice(index, 1);
    state.layers.splice(to, 0, layer);
    renderStack(`#layer-${to} .${step < 0 ? "move-up" : "move-down"}`);
    changed();
  }

  function removeLayer(index) {
    state.layers.splice(index, 1);
    const next = Math.min(index, state.layers.length - 1);
    renderStack(next >= 0 ? `#layer-${next} .remove` : "#add-kind");
    changed();
  }

  // ---------------------------------------------------------------- errors at their fields
  function clearErrors() {
    for (const el of document.querySelectorAll(".field-error")) { el.hidden = true; el.textContent = ""; }
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of document.querySelectorAll(".layer.invalid")) el.classList.remove("invalid");
  }

  // Where the server's `field` points: `layers[0].config.in_channels` is that input; `layers[0]`
  // is the layer's card (and, when the message names one of its arguments as `config.x`, that
  // argument too); `input` / `input_shape` is the input; anything else is the stack as a whole.
  function showError(field, message) {
    const slots = [];
    const match = /^layers\[(\d+)\](?:\.config\.(\w+))?/.exec(field || "");
    if (match) {
      const index = Number(match[1]);
      const card = $(`layer-${index}`);
      if (card) card.classList.add("invalid");
      let name = match[2];
      if (!name) {
        const named = /config\.(\w+)/.exec(message);
        if (named && $(`layer-${index}-${named[1]}`)) name = named[1];
      }
      if (name && $(`err-layers[${index}].config.${name}`)) {
        slots.push($(`err-layers[${index}].config.${name}`));
        $(`layer-${index}-${name}`).setAttribute("aria-invalid", "true");
      } else if ($(`err-layers[${index}]`)) {
        slots.push($(`err-layers[${index}]`));
      }
    } else if (field && /^input/.test(field)) {
      slots.push($("err-input"));
    }
    if (!slots.length) slots.push($("err-stack"));
    for (const slot of slots) {
      slot.textContent = slot.hidden ? message : `${slot.textContent} ${message}`;
      slot.hidden = false;
    }
  }

  function showApiError(error) {
    if (needKey(error)) return;
    const body = error.body || {};
    if (Array.isArray(body.errors) && body.errors.length) {
      for (const item of body.errors) showError(item.field, `${item.field}: ${item.message}`);
    } else {
      showError(body.field, error.message);
    }
  }

  // ---------------------------------------------------------------- the shape table
  let shapesTicket = 0;
  let shapesTimer = null;

  // The table's data-state: "pending" from an edit until its answer is shown, then "ok" or "invalid".
  function scheduleShapes() {
    clearTimeout(shapesTimer);
    shapesTicket++;  // an answer still on its way is for the stack as it was: it must not be drawn
    $("shape-table").dataset.state = "pending";
    shapesTimer = setTimeout(updateShapes, 200);
  }

  function stackLayers() { return state.layers.map((layer) => ({ kind: layer.kind, config: layerConfig(layer) })); }

  async function updateShapes() {
    const ticket = ++shapesTicket;
    const input = currentInput();
    const body = $("shape-table").tBodies[0];
    const foot = $("shape-table").tFoot;
    if (input.error || !state.layers.length) {
      clearErrors();
      body.textContent = ""; foot.textContent = "";
      if (input.error) showError("input", input.error);
      else showError("layers", "add a layer to see its shapes");
      $("shapes-state").textContent = "";
      $("shape-table").dataset.state = "invalid";
      return;
    }
    $("shapes-state").textContent = "(checking…)";
    let result;
    try {
      result = await api("POST", "/v1/shapes", { input_shape: input.shape, layers: stackLayers() });
    } catch (error) {
      if (ticket !== shapesTicket) return;
      clearErrors();
      showApiError(error);
      $("shapes-state").textContent = "(invalid: see the message at the field)";
      $("shape-table").classList.add("stale");
      $("shape-table").dataset.state = "invalid";
      return;
    }
    if (ticket !== shapesTicket) return;
    clearErrors();
    banner("");
    $("shape-table").classList.remove("stale");
    $("shapes-state").textContent = `(${showShape(result.input_shape)} → ${showShape(result.output_shape)})`;
    body.textContent = "";
    for (const row of result.layers) {
      const tr = document.createElement("tr");
      tr.id = `shape-row-${row.index}`;
      const cells = [
        String(row.index),
        kinds[row.kind] ? kinds[row.kind].torch.replace("torch.nn.", "") : row.kind,
        showShape(row.output_shape),
        row.parameter_count.toLocaleString("en"),
        row.macs.toLocaleString("en"),
        row.receptive_field ? `${row.receptive_field.join("×")} (${row.jump.join("×")})` : "—",
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
      if (row.formula.length) {
        // The formulas get a row of their own: long lines, read in full.
        const under = document.createElement("tr");
        under.className = "formula-row";
        const formula = document.createElement("td");
        formula.colSpan = 6;
        formula.className = "formula";
        for (const line of row.formula) {
          const code = document.createElement("code");
          code.textContent = line;
          formula.appendChild(code);
        }
        under.appendChild(formula);
        body.appendChild(under);
      }
    }
    foot.textContent = "";
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    const t = result.totals;
    td.textContent = `Total: ${t.parameter_count.toLocaleString("en")} parameters, ${t.macs.toLocaleString("en")} multiply-adds, ` +
      `estimated ${(t.estimated_total_bytes / 1024).toFixed(1)} KiB (torchinfo's estimate)`;
    tr.appendChild(td);
    foot.appendChild(tr);
    $("shape-table").dataset.state = "ok";
  }

  function showShape(shape) { return `(${shape.join(", ")})`; }

  // ---------------------------------------------------------------- the input preview
  function drawInputPreview() {
    const input = currentInput();
    const canvas = $("input-canvas");
    const info = $("input-info");
    if (input.error) { info.textContent = ""; canvas.hidden = true; return; }
    const shape = input.shape;
    info.textContent = `input shape ${showShape(shape)}` + (state.source === "random"
      ? `: drawn by the server as torch.manual_seed(${intOf(state.gen.seed, 0)}); torch.${state.gen.dist === "uniform" ? "rand" : "randn"}(${shape.join(", ")})`
      : "");
    if (!input.values || shape.length !== 4 || (shape[1] !== 3 && shape[1] !== 1)) { canvas.hidden = true; return; }
    const [, channels, height, width] = shape;
    canvas.hidden = false;
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const plane = width * height;
    for (let k = 0; k < plane; k++) {
      for (let c = 0; c < 3; c++) {
        const v = input.values[(channels === 3 ? c : 0) * plane + k];
        pixels.data[4 * k + c] = Math.round(Math.max(0, Math.min(1, v)) * 255);
      }
      pixels.data[4 * k + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
  }

  function loadImage(file) {
    const url = URL.createObjectURL(file);
    const picture = new Image();
    picture.onload = () => {
      URL.revokeObjectURL(url);
      let width = picture.naturalWidth, height = picture.naturalHeight;
      const cap = Math.max(8, Math.min(MAX_SIDE, intOf(state.imageMax, 128)));
      if (state.imageResize && Math.max(width, height) > cap) {
        const factor = cap / Math.max(width, height);
        width = Math.max(1, Math.round(width * factor)); height = Math.max(1, Math.round(height * factor));
      } else if (Math.max(width, height) > MAX_SIDE) {
        image = null;
        showError("input", `the image is ${picture.naturalWidth}×${picture.naturalHeight}; the limit is ${MAX_SIDE} px a side: tick "Resize"`);
        return;
      }
      const canvas = document.createElement("canvas");
      canvas.width = width; canvas.height = height;
      const context = canvas.getContext("2d");
      context.drawImage(picture, 0, 0, width, height);
      const rgba = context.getImageData(0, 0, width, height).data;
      const pixels = new Uint8Array(3 * width * height);
      for (let k = 0; k < width * height; k++) for (let c = 0; c < 3; c++) pixels[3 * k + c] = rgba[4 * k + c];
      image = { width, height, pixels };
      changed();
    };
    picture.onerror = () => { URL.revokeObjectURL(url); showError("input", "this file could not be decoded as an image"); };
    picture.src = url;
  }

  // ---------------------------------------------------------------- Run
  function requestBody() {
    const input = currentInput();
    if (input.error) return { error: input.error };
    const compare = state.backend === "compare";
    return {
      body: {
        layers: stackLayers(), input: input.wire, seed: intOf(state.seed, 0),
        backend: compare ? "torch" : state.backend, compare, training: state.training,
        encoding: "base64", return_intermediates: true,
        ...(state.saliency ? { gradients: true } : {}),
      },
    };
  }

  async function run() {
    const { body, error } = requestBody();
    if (error) { showError("input", error); return; }
    $("run").disabled = true;
    $("run-state").textContent = "Running…";
    try {
      lastResult = await api("POST", "/v1/sequential", body);
    } catch (failure) {
      $("run").disabled = false;
      $("run-state").textContent = `The run failed: ${failure.message}`;
      showApiError(failure);
      return;
    }
    $("run").disabled = false;
    banner("");
    state.ran = true;
    saveState();
    renderResult();
  }

  function renderResult() {
    const result = lastResult;
    if (!result) return;
    $("run-state").textContent = `${result.backend} backend, ${result.elapsed_ms} ms: ` +
      `${showShape(result.input_shape)} → ${showShape(result.output_shape)}, ${result.parameter_count.toLocaleString("en")} parameters.`;
    const summary = $("run-summary");
    summary.textContent = "";
    if (result.comparison) {
      const c = result.comparison;
      const p = document.createElement("p");
      p.className = c.all_layers_allclose ? "ok" : "bad";
      p.id = "comparison";
      p.textContent = `Compared with the ${c.backend} backend: final output max |difference| ${c.max_abs_diff}, ` +
        `every layer within tolerance: ${c.all_layers_allclose ? "yes" : "no"} (rtol ${c.rtol}, atol ${c.atol}).`;
      summary.appendChild(p);
    }
    const out = $("layers-out");
    out.textContent = "";
    result.layers.forEach((layer) => out.appendChild(renderLayerResult(layer)));
    renderSaliency(result);
  }

  // |dL/dx| of batch item 0 with L = output.sum(), the largest over the channels (one map, the
  // input's spatial shape); a 2-D input (N, F) gives one strip per sample.
  function saliencyMap(gradient) {
    const shape = gradient.shape, values = gradient.values;
    if (shape.length <= 2) {
      const rows = shape.length === 2 ? shape[0] : 1;
      return { rows, cols: values.length / rows, values: Float64Array.from(values, Math.abs) };
    }
    const map = mapsOf(gradient)[0];
    const plane = shape.slice(2).reduce((a, b) => a * b, 1);
    const magnitude = new Float64Array(map.rows * map.cols);
    for (let c = 0; c < shape[1]; c++) {
      for (let k = 0; k < magnitude.length; k++) {
        magnitude[k] = Math.max(magnitude[k], Math.abs(values[c * plane + map.offset + k]));
      }
    }
    return { rows: map.rows, cols: map.cols, values: magnitude };
  }

  function renderSaliency(result) {
    const out = $("saliency-out");
    out.textContent = "";
    const gradient = result.gradients && result.gradients.input ? decodeTensor(result.gradients.input) : null;
    if (!gradient) return;
    const map = saliencyMap(gradient);
    const [min, max] = rangeOf(map.values, 0, map.values.length);
    const figure = document.createElement("figure");
    figure.className = "map";
    const canvas = document.createElement("canvas");
    canvas.className = "heatmap";
    canvas.id = "saliency-map";
    drawHeatmap(canvas, map.values, 0, map.rows, map.cols, min, max);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `input gradient magnitude: ${map.rows}×${map.cols}, values ${fmt(min)} to ${fmt(max)}`);
    sizeCanvas(canvas, map.rows, map.cols);
    figure.appendChild(canvas);
    const caption = document.createElement("figcaption");
    caption.textContent = `|∂L/∂x| [${fmt(min)}, ${fmt(max)}] (${result.grad_fn || "gradient"})`;
    figure.appendChild(caption);
    out.appendChild(figure);
  }

  function layerTitle(layer) {
    const name = kinds[layer.kind] ? kinds[layer.kind].torch.replace("torch.nn.", "") : layer.kind;
    return `${layer.index} · ${name} → ${showShape(layer.output_shape)}`;
  }

  // A layer's output as 2-D maps of batch item 0: (N, C, *spatial) gives one map per channel
  // (1-D: a strip; 3-D: the middle depth slice); (N, F) gives one map, N × F.
  function mapsOf(tensor) {
    const shape = tensor.shape, values = tensor.values;
    if (shape.length < 2) return [{ label: "output", rows: 1, cols: values.length, offset: 0, stride: 1 }];
    if (shape.length === 2) return [{ label: "batch × features", rows: shape[0], cols: shape[1], offset: 0 }];
    const channels = shape[1];
    const spatial = shape.slice(2);
    const plane = spatial.reduce((a, b) => a * b, 1);
    let rows, cols, sliceOffset = 0, note = "";
    if (spatial.length === 1) { rows = 1; cols = spatial[0]; }
    else if (spatial.length === 2) { rows = spatial[0]; cols = spatial[1]; }
    else {
      rows = spatial[spatial.length - 2]; cols = spatial[spatial.length - 1];
      const depth = Math.floor(spatial[0] / 2);
      sliceOffset = depth * rows * cols;
      note = `, depth ${depth}`;
    }
    const maps = [];
    for (let c = 0; c < Math.min(channels, MAX_MAPS); c++) {
      maps.push({ label: `channel ${c}${note}`, channel: c, rows, cols, offset: c * plane + sliceOffset });
    }
    return maps;
  }

  function rangeOf(values, offset, count) {
    let min = Infinity, max = -Infinity;
    for (let k = offset; k < offset + count; k++) {
      const v = values[k];
      if (Number.isFinite(v)) { if (v < min) min = v; if (v > max) max = v; }
    }
    return min <= max ? [min, max] : [0, 0];
  }

  function drawHeatmap(canvas, values, offset, rows, cols, min, max) {
    canvas.width = cols; canvas.height = rows;
    canvas.dataset.min = String(min);
    canvas.dataset.max = String(max);
    canvas.dataset.colormap = "viridis";
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(cols, rows);
    for (let k = 0; k < rows * cols; k++) {
      const v = Number(values[offset + k]);
      const colour = Number.isNaN(v) ? NAN_COLOUR : LUT[v === Infinity ? 255 : v === -Infinity ? 0 : level(v, min, max)];
      pixels.data[4 * k] = colour[0]; pixels.data[4 * k + 1] = colour[1]; pixels.data[4 * k + 2] = colour[2];
      pixels.data[4 * k + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
  }

  function renderLayerResult(layer) {
    const section = document.createElement("section");
    section.className = "layer-out";
    section.id = `out-${layer.index}`;
    const h = document.createElement("h3");
    h.textContent = layerTitle(layer);
    section.appendChild(h);
    if (layer.formula && layer.formula.length) {
      const f = document.createElement("p");
      f.className = "formula";
      for (const line of layer.formula) { const code = document.createElement("code"); code.textContent = line; f.appendChild(code); }
      section.appendChild(f);
    }
    if (layer.comparison) {
      const c = layer.comparison;
      const p = document.createElement("p");
      p.className = `layer-comparison ${c.allclose ? "ok" : "bad"}`;
      p.textContent = `vs ${c.backend}: max |difference| ${c.max_abs_diff}` + (c.allclose ? " (within tolerance)" : " (OUT of tolerance)");
      section.appendChild(p);
    }
    const output = decodeTensor(layer.output);
    if (!output) return section;
    const maps = mapsOf(output);
    const perChannel = state.scale === "channel";
    const shared = rangeOf(output.values, 0, output.values.length);
    const indices = layer.indices ? decodeTensor(layer.indices) : null;
    const weight = layer.parameters && layer.parameters.weight && /^conv/.test(layer.kind) ? decodeTensor(layer.parameters.weight) : null;
    const weightRange = weight ? rangeOf(weight.values, 0, weight.values.length) : null;
    const grid = document.createElement("div");
    grid.className = "maps";
    for (const map of maps) {
      const figure = document.createElement("figure");
      figure.className = "map";
      const canvas = document.createElement("canvas");
      canvas.className = "heatmap";
      canvas.dataset.layer = String(layer.index);
      if (map.channel !== undefined) canvas.dataset.channel = String(map.channel);
      canvas.dataset.offset = String(map.offset);
      const [min, max] = perChannel ? rangeOf(output.values, map.offset, map.rows * map.cols) : shared;
      drawHeatmap(canvas, output.values, map.offset, map.rows, map.cols, min, max);
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `layer ${layer.index} ${map.label}: ${map.rows}×${map.cols}, values ${fmt(min)} to ${fmt(max)}`);
      canvas.addEventListener("mousemove", (event) => hover(event, canvas, layer, output, map, indices));
      canvas.addEventListener("mouseleave", () => { $("hover-info").textContent = ""; });
      // The keyboard's hover: focus a map, move over it with the arrow keys.
      canvas.tabIndex = 0;
      let cursor = [0, 0];
      canvas.addEventListener("focus", () => inspect(layer, output, map, indices, cursor[0], cursor[1]));
      canvas.addEventListener("blur", () => { $("hover-info").textContent = ""; });
      canvas.addEventListener("keydown", (event) => {
        const step = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[event.key];
        if (!step) return;
        event.preventDefault();
        cursor = [Math.max(0, Math.min(map.rows - 1, cursor[0] + step[0])), Math.max(0, Math.min(map.cols - 1, cursor[1] + step[1]))];
        inspect(layer, output, map, indices, cursor[0], cursor[1]);
      });
      sizeCanvas(canvas, map.rows, map.cols);
      figure.appendChild(canvas);
      if (weight && map.channel !== undefined && map.channel < weight.shape[0]) {
        const kernel = kernelImage(weight, map.channel, weightRange);
        if (kernel) figure.appendChild(kernel);
      }
      const caption = document.createElement("figcaption");
      caption.textContent = `${map.label} [${fmt(min)}, ${fmt(max)}]`;
      figure.appendChild(caption);
      grid.appendChild(figure);
    }
    section.appendChild(grid);
    const channels = output.shape.length > 2 ? output.shape[1] : 0;
    if (channels > MAX_MAPS) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = `The first ${MAX_MAPS} of ${channels} channels are drawn.`;
      section.appendChild(p);
    }
    if (output.shape.length > 0 && output.shape[0] > 1 && output.shape.length > 2) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = `Batch item 0 of ${output.shape[0]} is drawn.`;
      section.appendChild(p);
    }
    if (/^maxpool/.test(layer.kind) && !indices) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = "Tick return_indices on this layer to see, on hover, which input element each maximum came from.";
      section.appendChild(p);
    }
    if (layer.statistics || layer.buffers) section.appendChild(batchNormCharts(layer));
    return section;
  }

  function sizeCanvas(canvas, rows, cols) {
    // Drawn at one pixel per element, shown larger without smoothing (CSS image-rendering: pixelated).
    const scale = Math.max(1, Math.min(8, Math.floor(112 / Math.max(rows, cols, 1)) || 1));
    if (rows <= 4 && cols > 4 * rows) {
      // A strip (a 1-D signal, a row of features): stretched to stay visible.
      canvas.style.width = `${Math.min(Math.max(cols * scale, 96), 320)}px`;
      canvas.style.height = `${rows * 16}px`;
    } else {
      canvas.style.width = `${Math.min(cols * scale, 224)}px`;
    }
  }

  function fmt(v) { return Number.isFinite(v) ? Number(v.toPrecision(4)).toString() : String(v); }

  function hover(event, canvas, layer, output, map, indices) {
    const rect = canvas.getBoundingClientRect();
    const j = Math.max(0, Math.min(map.cols - 1, Math.floor(((event.clientX - rect.left) / rect.width) * map.cols)));
    const i = Math.max(0, Math.min(map.rows - 1, Math.floor(((event.clientY - rect.top) / rect.height) * map.rows)));
    inspect(layer, output, map, indices, i, j);
  }

  // One element of a drawn map in the status bar: its value and, after a max-pool with
  // return_indices, where in the channel its maximum came from.
  function inspect(layer, output, map, indices, i, j) {
    const k = map.offset + i * map.cols + j;
    let text = `layer ${layer.index}, ${map.label}, position (${i}, ${j}): ${fmt(Number(output.values[k]))}`;
    if (indices) {
      const flat = Number(indices.values[k]);
      const inputSpatial = layer.input_shape.slice(2);
      const where = [];
      let rest = flat;
      for (let d = inputSpatial.length - 1; d >= 0; d--) { where.unshift(rest % inputSpatial[d]); rest = Math.floor(rest / inputSpatial[d]); }
      text += `; the maximum of its window is input element ${flat} = (${where.join(", ")}) of the channel`;
    }
    $("hover-info").textContent = text;
  }

  // A conv kernel (weight[o]) as a small image: RGB when it reads 3 channels, else its first
  // input channel's slice; colours on the layer's weight range.
  function kernelImage(weight, o, range) {
    const shape = weight.shape;
    const cin = shape[1];
    const k = shape.slice(2);
    if (k.length > 2) return null;
    const rows = k.length === 2 ? k[0] : 1, cols = k[k.length - 1];
    const plane = rows * cols;
    const base = o * cin * plane;
    const canvas = document.createElement("canvas");
    canvas.className = "kernel";
    canvas.width = cols; canvas.height = rows;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(cols, rows);
    const [min, max] = range;
    for (let p = 0; p < plane; p++) {
      if (cin === 3) {
        for (let c = 0; c < 3; c++) pixels.data[4 * p + c] = level(weight.values[base + c * plane + p], min, max);
      } else {
        const colour = LUT[level(weight.values[base + p], min, max)];
        pixels.data[4 * p] = colour[0]; pixels.data[4 * p + 1] = colour[1]; pixels.data[4 * p + 2] = colour[2];
      }
      pixels.data[4 * p + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `kernel of output channel ${o}: ${rows}×${cols}` + (cin === 3 ? ", its three input channels as red, green and blue" : ", input channel 0"));
    canvas.title = cin === 3 ? "kernel (input channels as RGB)" : `kernel (input channel 0 of ${cin})`;
    return canvas;
  }

  function batchNormCharts(layer) {
    const wrap = document.createElement("div");
    wrap.className = "bn-charts";
    const stats = layer.statistics || {};
    const buffers = layer.buffers || {};
    const pairs = [["mean", stats.mean, buffers.running_mean], ["var", stats.var, buffers.running_var]];
    for (const [name, batch, running] of pairs) {
      const a = batch ? decodeTensor(batch) : null;
      const b = running ? decodeTensor(running) : null;
      if (!a && !b) continue;
      const figure = document.createElement("figure");
      figure.className = "chart";
      const canvas = document.createElement("canvas");
      canvas.width = 320; canvas.height = 120;
      barChart(canvas, a ? Array.from(a.values) : null, b ? Array.from(b.values) : null);
      const caption = document.createElement("figcaption");
      caption.textContent = `${name} per channel: ` + [a ? "batch (bars)" : "", b ? `running_${name} after the pass (dots)` : ""].filter(Boolean).join(", ");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `${caption.textContent}.` +
        (a ? ` Batch: ${Array.from(a.values).map(fmt).join(", ")}.` : "") + (b ? ` Running: ${Array.from(b.values).map(fmt).join(", ")}.` : ""));
      figure.appendChild(canvas);
      figure.appendChild(caption);
      wrap.appendChild(figure);
    }
    return wrap;
  }

  function barChart(canvas, bars, dots) {
    const context = canvas.getContext("2d");
    const all = [0].concat(bars || [], dots || []).filter(Number.isFinite);
    const min = Math.min(...all), max = Math.max(...all);
    const n = Math.max((bars || []).length, (dots || []).length);
    const pad = 10, width = canvas.width - 2 * pad, height = canvas.height - 2 * pad;
    const y = (v) => pad + height - ((v - min) / (max - min || 1)) * height;
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = "#999";
    context.beginPath(); context.moveTo(pad, y(0)); context.lineTo(pad + width, y(0)); context.stroke();
    context.fillStyle = "#5b6475";
    context.font = "10px system-ui, sans-serif";
    context.fillText(fmt(max), pad + 2, pad + 8);
    context.fillText(fmt(min), pad + 2, pad + height);
    const step = width / Math.max(n, 1);
    for (let c = 0; c < n; c++) {
      if (bars && Number.isFinite(bars[c])) {
        context.fillStyle = "#3e4a89";
        const top = Math.min(y(0), y(bars[c]));
        context.fillRect(pad + c * step + step * 0.15, top, step * 0.7, Math.max(1, Math.abs(y(bars[c]) - y(0))));
      }
      if (dots && Number.isFinite(dots[c])) {
        context.fillStyle = "#e0a800";
        context.beginPath(); context.arc(pad + (c + 0.5) * step, y(dots[c]), Math.max(2, Math.min(5, step / 4)), 0, 2 * Math.PI); context.fill();
      }
    }
  }

  function drawLegend() {
    const canvas = $("legend");
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(256, 1);
    for (let k = 0; k < 256; k++) { for (let c = 0; c < 3; c++) pixels.data[4 * k + c] = LUT[k][c]; pixels.data[4 * k + 3] = 255; }
    context.putImageData(pixels, 0, 0);
  }

  // ---------------------------------------------------------------- copy as
  function pyValue(value) {
    if (value === null) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return `(${value.map(pyValue).join(", ")}${value.length === 1 ? "," : ""})`;
    if (typeof value === "string") return JSON.stringify(value);
    return String(value);
  }

  function changedArguments(layer) {
    const config = layerConfig(layer);
    const defaults = kinds[layer.kind] ? kinds[layer.kind].defaults : {};
    return Object.entries(config).filter(([name, value]) =>
      !(Object.prototype.hasOwnProperty.call(defaults, name) && JSON.stringify(defaults[name]) === JSON.stringify(value)));
  }

  // The input in Python: the same tensor, bit for bit (raw bytes as base64, the server's own draw
  // for a random tensor, the pasted numbers as float32 or their dtype).
  function pythonInput(wire, module) {
    const dtype = (wire && wire.dtype) || "float32";
    const shape = wire && wire.shape ? wire.shape.join(", ") : "";
    if (wire && wire.random) {
      return module === "sdk"
        ? `x = random_tensor(${pyValue(wire.shape)}, seed=${wire.seed || 0}, distribution=${JSON.stringify(wire.random)}, dtype=${JSON.stringify(dtype)})`
        : `torch.manual_seed(${wire.seed || 0})\nx = torch.${wire.random === "uniform" ? "rand" : "randn"}(${shape}${shape ? ", " : ""}dtype=torch.${dtype})`;
    }
    if (wire && wire.base64 !== undefined) {
      const bytes = `base64.b64decode(\n    "${wire.base64}")`;
      return module === "sdk" ? `x = np.frombuffer(${bytes}, dtype=np.${dtype}).reshape(${shape})`
        : `x = torch.frombuffer(bytearray(${bytes}), dtype=torch.${dtype}).reshape(${shape})`;
    }
    const data = wire && typeof wire === "object" && !Array.isArray(wire) ? wire.data : wire;
    const numbers = `json.loads(${JSON.stringify(JSON.stringify(data))})`;
    const reshape = wire && wire.shape ? `.reshape(${shape})` : "";
    return module === "sdk" ? `x = np.asarray(${numbers}, dtype=np.${dtype})${reshape}`
      : `x = torch.tensor(${numbers}, dtype=torch.${dtype})${reshape}`;
  }

  function copyText(format) {
    const { body, error } = requestBody();
    if (error) return `# ${error}`;
    const origin = window.location.origin;
    if (format === "curl") {
      const key = apiKey() ? ` -H "X-API-Key: $LAYERLAB_API_KEY"` : "";
      return `curl -s ${origin}/v1/sequential -H 'content-type: application/json'${key} -d @- <<'JSON'\n${JSON.stringify(body)}\nJSON`;
    }
    if (format === "sdk") {
      const lines = ["import base64", "import json", "", "import numpy as np", "", "from app.client import Client, layer, random_tensor", "",
        pythonInput(body.input, "sdk"), "",
        `with Client(base_url=${JSON.stringify(origin)}) as client:  # the key, if any, from $LAYERLAB_API_KEY`,
        "    result = client.sequential(["];
      for (const layer of state.layers) {
        const args = changedArguments(layer).map(([n, v]) => `, ${n}=${pyValue(v)}`).join("");
        lines.push(`        layer(${JSON.stringify(layer.kind)}${args}),`);
      }
      lines.push(`    ], x, seed=${body.seed}, backend=${JSON.stringify(body.backend)}, compare=${pyValue(body.compare)}, ` +
        `training=${pyValue(body.training)}, return_intermediates=True${body.gradients ? ", gradients=True" : ""})`);
      lines.push("print(result)", "print(result.output)");
      if (body.gradients) lines.push('print(result.gradients["input"])');
      return lines.join("\n");
    }
    const lines = ["import base64", "import json", "", "import torch", "from torch import nn", "", pythonInput(body.input, "torch"), "",
      `torch.manual_seed(${body.seed})  # the server initializes parameters the same way`, "model = nn.Sequential("];
    for (const layer of state.layers) {
      const name = kinds[layer.kind] ? kinds[layer.kind].torch.replace("torch.nn.", "") : layer.kind;
      lines.push(`    nn.${name}(${changedArguments(layer).map(([n, v]) => `${n}=${pyValue(v)}`).join(", ")}),`);
    }
    lines.push(")", `model.train(${pyValue(body.training)})`, "outputs = []", "h = x", "with torch.no_grad():",
      "    for module in model:", "        h = module(h)",
      "        if isinstance(h, tuple):  # MaxPool with return_indices=True gives (output, indices)", "            h = h[0]",
      "        outputs.append(h)", "print(h.shape)", "print(h)");
    if (body.gradients) {
      lines.push("", "# The input's gradient (the saliency picture): dL/dx with L = output.sum()",
        "x = x.detach().requires_grad_(True)", "h = x", "for module in model:", "    h = module(h)",
        "    if isinstance(h, tuple):", "        h = h[0]", "h.sum().backward()", "print(x.grad)");
    }
    return lines.join("\n");
  }

  async function copyOut() {
    const text = copyText($("copy-as").value);
    const area = $("copy-text");
    area.hidden = false;
    area.value = text;
    let copied = false;
    try { await navigator.clipboard.writeText(text); copied = true; } catch (e) { copied = false; }
    $("copy-state").textContent = copied ? "Copied to the clipboard (also shown above)." : "Select the text above and copy it.";
    area.focus();
    area.select();
  }

  // ---------------------------------------------------------------- the URL fragment
  function encodeState() {
    const saved = Object.assign({}, state);
    if (state.source === "image" && image && Math.max(image.width, image.height) <= LINK_IMAGE_SIDE) {
      saved.image = { width: image.width, height: image.height, pixels: toBase64(image.pixels) };
    }
    if (saved.json.length > MAX_JSON_IN_LINK) saved.json = "";
    const bytes = new TextEncoder().encode(JSON.stringify(saved));
    return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeState(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(new TextDecoder().decode(fromBase64(b64 + "===".slice((b64.length + 3) % 4))));
  }

  let lastHash = "";
  function saveState() {
    lastHash = `#state=${encodeState()}`;
    history.replaceState(null, "", lastHash);
  }

  function restoreState() {
    const match = /^#state=([\w-]+)$/.exec(window.location.hash);
    if (!match) return false;
    let saved;
    try { saved = decodeState(match[1]); } catch (e) { banner(`The link's state could not be read: ${e.message}`); return false; }
    const generated = state.gen;
    for (const name of Object.keys(state)) if (saved[name] !== undefined) state[name] = saved[name];
    state.gen = Object.assign({}, generated, saved.gen || {});
    state.layers = (saved.layers || []).filter((l) => l && kinds[l.kind]).map((l) => completeLayer({ kind: l.kind, values: l.values || {} }));
    if (saved.image && saved.image.pixels) image = { width: saved.image.width, height: saved.image.height, pixels: fromBase64(saved.image.pixels) };
    return true;
  }

  function showState() {
    for (const radio of document.querySelectorAll("input[name=source]")) radio.checked = radio.value === state.source;
    for (const radio of document.querySelectorAll("input[name=scale]")) radio.checked = radio.value === state.scale;
    $("gen-height").value = state.gen.height; $("gen-width").value = state.gen.width;
    $("gen-cell").value = state.gen.cell; $("gen-channels").value = state.gen.channels;
    $("gen-dist").value = state.gen.dist; $("gen-seed").value = state.gen.seed;
    $("image-resize").checked = state.imageResize; $("image-max").value = state.imageMax;
    $("json-input").value = state.json;
    $("seed").value = state.seed; $("backend").value = state.backend; $("training").checked = state.training;
    $("saliency").checked = state.saliency;
    showSourceOptions();
    renderStack();
  }

  function showSourceOptions() {
    const s = state.source;
    $("opts-generated").hidden = !["gradient", "checkerboard", "random"].includes(s);
    $("cell-label").hidden = s !== "checkerboard";
    $("channels-label").hidden = $("dist-label").hidden = $("in-seed-label").hidden = s !== "random";
    $("opts-image").hidden = s !== "image";
    $("opts-json").hidden = s !== "json";
  }

  // Any edit: the old run no longer matches what is on screen, the link follows, shapes refresh.
  function changed() {
    state.ran = false;
    $("run-state").textContent = lastResult ? "The stack changed: press Run to compute it again." : "Press Run to compute the stack.";
    saveState();
    drawInputPreview();
    scheduleShapes();
  }

  // ---------------------------------------------------------------- wiring
  // An input bound to state[key] (or state.gen[key]): read at each event, since a restored
  // link replaces state.gen.
  function bind(id, key, event, read, inGen) {
    $(id).addEventListener(event || "input", () => {
      (inGen ? state.gen : state)[key] = read ? read($(id)) : $(id).value;
      changed();
    });
  }

  function wire() {
    for (const radio of document.querySelectorAll("input[name=source]")) {
      radio.addEventListener("change", () => { state.source = radio.value; showSourceOptions(); changed(); });
    }
    for (const radio of document.querySelectorAll("input[name=scale]")) {
      radio.addEventListener("change", () => { state.scale = radio.value; saveState(); renderResult(); });
    }
    bind("gen-height", "height", "input", null, true);
    bind("gen-width", "width", "input", null, true);
    bind("gen-cell", "cell", "input", null, true);
    bind("gen-channels", "channels", "input", null, true);
    bind("gen-dist", "dist", "change", null, true);
    bind("gen-seed", "seed", "input", null, true);
    bind("image-resize", "imageResize", "change", (el) => el.checked);
    bind("image-max", "imageMax");
    bind("json-input", "json");
    bind("seed", "seed");
    bind("backend", "backend", "change");
    bind("training", "training", "change", (el) => el.checked);
    bind("saliency", "saliency", "change", (el) => el.checked);
    $("image-file").addEventListener("change", () => { if ($("image-file").files[0]) loadImage($("image-file").files[0]); });
    $("add-layer").addEventListener("click", () => addLayer($("add-kind").value));
    $("load-notebook").addEventListener("click", () => {
      state.layers = NOTEBOOK_STACK.map((l) => completeLayer(copyLayer(l)));
      renderStack("#layer-0 input");
      changed();
    });
    $("run").addEventListener("click", run);
    $("copy").addEventListener("click", copyOut);
    $("share").addEventListener("click", async () => {
      saveState();
      try { await navigator.clipboard.writeText(window.location.href); $("copy-state").textContent = "Link copied: it reproduces this view."; }
      catch (e) { $("copy-state").textContent = "Copy the address bar: the link reproduces this view."; }
    });
    $("api-key").value = apiKey();
    $("api-key-save").addEventListener("click", () => {
      sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
      banner("");
      start();
    });
    window.addEventListener("hashchange", () => {
      if (window.location.hash === lastHash) return;
      lastResult = null;
      $("layers-out").textContent = ""; $("run-summary").textContent = "";
      if (restoreState()) { showState(); afterRestore(); }
    });
  }

  function afterRestore() {
    const ran = state.ran;
    changed();
    updateShapes();
    if (ran) run();
  }

  let started = false;
  async function start() {
    let list;
    try {
      list = await api("GET", "/v1/layers");
    } catch (error) {
      if (!needKey(error)) banner(`Could not list the layers: ${error.message}`);
      return;
    }
    kinds = {};
    kindOrder = list.map((entry) => entry.kind);
    for (const entry of list) kinds[entry.kind] = entry;
    renderKinds();
    if (!started) {
      started = true;
      state.layers = state.layers.map(completeLayer);
      restoreState();
    }
    showState();
    afterRestore();
  }

  // For tests and the curious: the colour map and the last response, read-only in spirit.
  window.layerlabPlayground = {
    colormap: LUT,
    level,
    lastResult: () => lastResult,
    copyText,
  };

  document.addEventListener("DOMContentLoaded", () => {
    drawLegend();
    wire();
    start();
  });
})();
