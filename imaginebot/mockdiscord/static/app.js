// The local Discord's channel view. Plain JS, no build step. It offers whatever commands the bot
// synced (subcommands and options included), acts as the chosen user, and redraws messages in
// place as the server pushes creates/edits/deletes over /app/ws. The chosen user's DM with the bot
// (once the bot opened it) is listed under "Direct messages"; nobody else sees it. A modal the bot
// opens for the chosen user shows as a dialog; a command's attachment option gets a file picker.
"use strict";

const TYPES = { SUB: 1, GROUP: 2, STRING: 3, INTEGER: 4, BOOLEAN: 5, USER: 6, CHANNEL: 7, ROLE: 8, MENTIONABLE: 9, NUMBER: 10, ATTACHMENT: 11 };
const ADMINISTRATOR = 0x8n;
const $ = (sel) => document.querySelector(sel);
const state = { guild: null, users: [], channels: [], dms: [], roles: [], commands: [], user: null, channel: null, socket: null, formFor: null, sizeLimit: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value != null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

// The little of Discord's markdown a bot's replies use: **bold**, `code`, <@user> mentions and links.
// Built as DOM nodes, never as HTML, so message text can't inject markup.
const MARKDOWN = /\*\*(.+?)\*\*|`([^`]+)`|<@!?(\d+)>|(https?:\/\/[^\s<>]+)/g;

function renderMarkdown(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(MARKDOWN)) {
    nodes.push(text.slice(last, match.index));
    const [, bold, code, mention, url] = match;
    if (bold !== undefined) nodes.push(el("strong", {}, renderMarkdown(bold)));
    else if (code !== undefined) nodes.push(el("code", {}, code));
    else if (mention !== undefined) {
      const user = state.users.find((u) => u.id === mention);
      nodes.push(el("span", { class: "mention" }, `@${user ? user.display_name : "unknown-user"}`));
    } else nodes.push(el("a", { href: url, target: "_blank", rel: "noopener" }, url));
    last = match.index + match[0].length;
  }
  nodes.push(text.slice(last));
  return nodes.filter((n) => n !== "");
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function notice(text) {
  const node = el("div", { class: "notice" }, text);
  $("#notices").append(node);
  setTimeout(() => node.remove(), 8000);
}

// -- who may use which command (Discord hides commands by default_member_permissions) ----------
function userCan(command) {
  const needed = command.default_member_permissions;
  if (needed == null) return true;
  const have = BigInt(state.user.permissions);
  return (have & ADMINISTRATOR) !== 0n || (have & BigInt(needed)) === BigInt(needed);
}

function commandPaths() {
  const out = [];
  for (const command of state.commands) {
    if (!userCan(command)) continue;
    const walk = (prefix, options, description) => {
      const subs = (options || []).filter((o) => o.type === TYPES.SUB || o.type === TYPES.GROUP);
      if (!subs.length) out.push({ path: prefix, options: options || [], description });
      for (const sub of subs) walk(`${prefix} ${sub.name}`, sub.options, sub.description);
    };
    walk(command.name, command.options, command.description);
  }
  return out;
}

// "/quota set user:bob images:5" → { entry, values }; "/imagine a fox --ar 3:2" → prompt = the rest
function parseLine(line) {
  const text = line.replace(/^\//, "");
  const entries = commandPaths().sort((a, b) => b.path.length - a.path.length);
  const entry = entries.find((e) => text === e.path || text.startsWith(e.path + " "));
  if (!entry) return null;
  const rest = text.slice(entry.path.length).trim();
  const values = {};
  const names = entry.options.map((o) => o.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const marks = names.length ? [...rest.matchAll(new RegExp(`(?:^|\\s)(${names.join("|")}):`, "g"))] : [];
  const free = marks.length ? rest.slice(0, marks[0].index).trim() : rest;
  marks.forEach((mark, i) => {
    const end = i + 1 < marks.length ? marks[i + 1].index : rest.length;
    values[mark[1]] = rest.slice(mark.index + mark[0].length, end).trim();
  });
  if (free) {
    const target = entry.options.find((o) => o.type === TYPES.STRING && o.required && !(o.name in values))
      || entry.options.find((o) => o.type === TYPES.STRING && !(o.name in values));
    if (target) values[target.name] = free;
  }
  return { entry, values };
}

// -- the options form -------------------------------------------------------------------------
function optionInput(option) {
  const pick = (items) => el("select", { name: option.name },
    el("option", { value: "" }, option.required ? "— choose —" : "—"), items);
  if (option.choices) return pick(option.choices.map((c) => el("option", { value: String(c.value) }, c.name)));
  switch (option.type) {
    case TYPES.USER: case TYPES.MENTIONABLE:
      return pick(state.users.filter((u) => !u.bot).map((u) => el("option", { value: u.username }, `${u.display_name} (@${u.username})`)));
    case TYPES.CHANNEL: return pick(state.channels.map((c) => el("option", { value: c.name }, `#${c.name}`)));
    case TYPES.ROLE: return pick(state.roles.map((r) => el("option", { value: r.name }, r.name)));
    case TYPES.BOOLEAN: return pick([el("option", { value: "true" }, "True"), el("option", { value: "false" }, "False")]);
    case TYPES.ATTACHMENT: return el("input", { name: option.name, type: "file" });
    case TYPES.INTEGER: case TYPES.NUMBER:
      return el("input", { name: option.name, type: "number", step: option.type === TYPES.INTEGER ? "1" : "any", min: option.min_value, max: option.max_value });
    default: return el("input", { name: option.name, type: "text", maxlength: option.max_length });
  }
}

function renderOptionsForm(entry) {
  if (state.formFor === (entry && entry.path)) return;
  state.formFor = entry && entry.path;
  const box = $("#options");
  box.replaceChildren();
  if (!entry) return;
  for (const option of entry.options) {
    box.append(el("label", { class: option.required ? "required" : "", title: option.description || "" },
      el("span", {}, option.name), optionInput(option)));
  }
}

function renderSuggestions() {
  const value = $("#command").value;
  const list = $("#suggestions");
  list.replaceChildren();
  const typed = value.startsWith("/") ? value.slice(1) : null;
  const parsed = typed !== null ? parseLine(value) : null;
  renderOptionsForm(parsed && parsed.entry);
  if (typed === null || parsed) { list.hidden = true; return; }
  const matches = commandPaths().filter((e) => e.path.startsWith(typed.trim()) || typed.trim() === "");
  for (const entry of matches) {
    list.append(el("li", { onclick: () => { $("#command").value = `/${entry.path} `; $("#command").focus(); renderSuggestions(); } },
      `/${entry.path}`, el("span", { class: "desc" }, entry.description || "")));
  }
  list.hidden = matches.length === 0;
}

async function submit(event) {
  event.preventDefault();
  const input = $("#command");
  const line = input.value.trim();
  if (!line) return;
  try {
    if (!line.startsWith("/")) {
      await api("/app/api/say", { user: state.user.id, channel: state.channel.id, content: line });
    } else {
      const parsed = parseLine(line);
      if (!parsed) throw new Error(`No command ${line.split(/\s/)[0]} (the bot registered: ${commandPaths().map((e) => "/" + e.path).join(", ") || "none yet"})`);
      const options = {};
      for (const field of $("#options").querySelectorAll("[name]")) {
        if (field.type === "file") { if (field.files.length) options[field.name] = await fileOption(field.files[0]); }
        else if (field.value !== "") options[field.name] = field.value;
      }
      Object.assign(options, parsed.values);
      await api("/app/api/command", { user: state.user.id, channel: state.channel.id, command: parsed.entry.path, options });
    }
    input.value = "";
    renderSuggestions();
  } catch (error) {
    notice(error.message);
  }
}

// A file for an attachment option: base64 in the command's JSON. Too large: refused here, as the
// Discord client refuses it before uploading.
async function fileOption(file) {
  if (state.sizeLimit && file.size > state.sizeLimit) throw new Error(`${file.name} is ${file.size} bytes: the upload limit is ${state.sizeLimit} bytes`);
  const url = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  return { filename: file.name, content_type: file.type || null, data: url.slice(url.indexOf(",") + 1) };
}

// -- modals: one open at a time, for its user only ---------------------------------------------
function modalItem(item) {
  if (item.kind === "display") return el("div", { class: "modal-text" }, renderMarkdown(item.content));
  let input;
  let count = null;
  if (item.kind === "select") {
    const multiple = item.max_values > 1;
    input = el("select", { name: item.custom_id, multiple, required: item.required && item.min_values > 0, size: multiple ? Math.min(item.options.length, 6) : null },
      multiple ? null : el("option", { value: "" }, item.placeholder || "Make a selection"),
      item.options.map((o) => el("option", { value: o.value, selected: !!o.default }, o.label)));
    if (multiple) count = el("span", { class: "modal-count" }, `choose ${item.min_values}–${item.max_values}`);
  } else {
    const attrs = { name: item.custom_id, placeholder: item.placeholder, maxlength: item.max_length, minlength: item.min_length || null, required: item.required };
    input = item.style === 2 ? el("textarea", { rows: 4, ...attrs }) : el("input", { type: "text", ...attrs });
    input.value = item.value;
    count = el("span", { class: "modal-count" });
    const update = () => { count.textContent = `${input.value.length}/${item.max_length}${item.min_length ? ` (at least ${item.min_length})` : ""}`; };
    input.addEventListener("input", update);
    update();
  }
  return el("label", { class: `modal-field${item.required ? " required" : ""}` },
    el("span", { class: "modal-label" }, item.label),
    item.description ? el("span", { class: "modal-desc" }, item.description) : null,
    input, count);
}

function showModal(modal) {
  const dialog = $("#modal");
  dialog.dataset.modalId = modal.id;
  // novalidate: the server checks what Discord's client checks and says why, in the test API's words
  const form = el("form", { id: "modal-form", novalidate: true },
    el("h2", {}, modal.title),
    modal.items.map(modalItem),
    el("div", { id: "modal-error", class: "modal-error" }),
    el("div", { class: "modal-buttons" },
      el("button", { type: "button", id: "modal-cancel", onclick: dismissModal }, "Cancel"),
      el("button", { type: "submit", id: "modal-submit" }, "Submit")));
  form.addEventListener("submit", submitModal);
  dialog.replaceChildren(form);
  if (!dialog.open) dialog.showModal();
}

function hideModal(id) {
  const dialog = $("#modal");
  if (id !== undefined && dialog.dataset.modalId !== id) return;
  delete dialog.dataset.modalId;
  if (dialog.open) dialog.close();
  dialog.replaceChildren();
}

async function submitModal(event) {
  event.preventDefault();
  const values = {};
  for (const field of $("#modal-form").querySelectorAll("[name]")) {
    values[field.name] = field.tagName === "SELECT" ? [...field.selectedOptions].map((o) => o.value).filter((v) => v !== "") : field.value;
  }
  try {
    await api("/app/api/modal", { user: state.user.id, modal: $("#modal").dataset.modalId, values });
    hideModal();
  } catch (error) {
    $("#modal-error").textContent = error.message;
  }
}

function dismissModal() {
  const id = $("#modal").dataset.modalId;
  hideModal();
  if (id) api("/app/api/modal/dismiss", { user: state.user.id, modal: id }).catch(() => {});  // already closed: fine
}

async function loadModal() {
  const modal = await api(`/app/api/modal?user=${state.user.id}`);
  if (modal) showModal(modal); else hideModal();
}

// -- messages ---------------------------------------------------------------------------------
function renderComponent(message, component) {
  if (component.type === 2) {
    const label = [component.emoji ? component.emoji.name : null, component.label].filter(Boolean).join(" ");
    if (component.style === 5) return el("a", { class: "component", href: component.url, target: "_blank" }, label);
    return el("button", {
      class: `component style-${component.style}`, disabled: !!component.disabled, "data-custom-id": component.custom_id, type: "button",
      onclick: () => api("/app/api/component", { user: state.user.id, message: message.id, custom_id: component.custom_id }).catch((e) => notice(e.message)),
    }, label || "\u00a0");
  }
  const multiple = (component.max_values || 1) > 1;
  const select = el("select", { class: "component", multiple, disabled: !!component.disabled, "data-custom-id": component.custom_id },
    multiple ? null : el("option", { value: "" }, component.placeholder || "Make a selection"),
    (component.options || []).map((o) => el("option", { value: o.value, selected: !!o.default }, o.label)));
  const send = () => {
    const values = [...select.selectedOptions].map((o) => o.value).filter((v) => v !== "");
    api("/app/api/component", { user: state.user.id, message: message.id, custom_id: component.custom_id, values }).catch((e) => notice(e.message));
  };
  if (!multiple) { select.addEventListener("change", send); return select; }
  return el("span", {}, select, el("button", { type: "button", class: "component style-2", onclick: send }, "Choose"));
}

function renderEmbed(embed) {
  return el("div", { class: "embed", style: embed.color ? `border-color: #${embed.color.toString(16).padStart(6, "0")}` : null },
    embed.title ? el("div", { class: "author" }, embed.title) : null,
    embed.description ? el("div", { class: "content" }, renderMarkdown(embed.description)) : null,
    (embed.fields || []).map((f) => el("div", {}, el("b", {}, f.name), " ", f.value)),
    embed.image ? el("img", { src: embed.image.url, alt: "" }) : null,
    embed.footer ? el("div", { class: "edited" }, embed.footer.text) : null);
}

// A spoiler (a file named SPOILER_…, flag 1 << 3) shows blurred under a SPOILER label until clicked, as
// in Discord; the click reveals it for this page only.
function renderAttachment(a) {
  if (!(a.content_type || "").startsWith("image/")) return el("a", { href: a.url, download: a.filename }, `📎 ${a.filename}`);
  const image = el("img", { src: a.url, alt: a.filename, title: a.filename });
  if (!((a.flags || 0) & 8)) return image;
  const box = el("div", { class: "spoiler", title: "Spoiler: click to reveal" }, image, el("span", { class: "spoiler-label" }, "SPOILER"));
  box.addEventListener("click", () => box.classList.add("revealed"), { once: true });
  return box;
}

function renderMessage(message) {
  const loading = (message.flags & 128) !== 0;
  const ephemeral = (message.flags & 64) !== 0;
  const node = el("article", { class: `message${ephemeral ? " ephemeral" : ""}`, id: `m-${message.id}`, "data-id": message.id },
    message.invoker ? el("div", { class: "invoked" }, `${message.invoker} ${message.invoked}`) : null,
    el("span", { class: `author${message.author.bot ? " bot" : ""}` }, message.author_name),
    message.edited_timestamp ? el("span", { class: "edited" }, " (edited)") : null,
    loading ? el("div", { class: "loading" }, `${message.author_name} is thinking…`) : null,
    message.content ? el("div", { class: "content" }, renderMarkdown(message.content)) : null,
    el("div", { class: "attachments" }, message.attachments.map(renderAttachment)),
    message.embeds.map(renderEmbed),
    message.components.map((row) => el("div", { class: "row" }, row.components.map((c) => renderComponent(message, c)))),
    ephemeral ? el("div", { class: "eph-note" }, "Only you can see this") : null,
    el("span", { class: "tools" }, el("button", {
      type: "button", class: "delete", title: ephemeral ? "Dismiss message" : "Delete message",
      onclick: () => api("/app/api/delete", { user: state.user.id, message: message.id }).catch((e) => notice(e.message)),
    }, ephemeral ? "Dismiss" : "🗑")));
  return node;
}

function showMessage(message) {
  if (message.channel_id !== state.channel.id) return;
  const old = document.getElementById(`m-${message.id}`);
  if (message.deleted) { if (old) old.remove(); return; }
  const box = $("#messages");
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
  const node = renderMessage(message);
  if (old) old.replaceWith(node); else box.append(node);
  if (stick) box.scrollTop = box.scrollHeight;
}

// -- loading and live updates ------------------------------------------------------------------
async function loadState() {
  const data = await api("/app/api/state");
  Object.assign(state, { guild: data.guild, users: data.users, channels: data.channels, roles: data.roles, commands: data.commands, sizeLimit: data.attachment_size_limit });
  state.formFor = undefined;
  $("#guild-name").textContent = data.guild.name;
  $("#bot-status").textContent = data.bot_connected ? `${data.bot.username}: connected` : `${data.bot.username}: not connected`;
  $("#bot-status").className = `status ${data.bot_connected ? "on" : "off"}`;
  const picker = $("#user-picker");
  const chosen = picker.value;
  picker.replaceChildren(...data.users.filter((u) => !u.bot).map((u) =>
    el("option", { value: u.id }, `${u.display_name} (@${u.username})${u.moderator ? " — moderator" : ""}`)));
  if (chosen) picker.value = chosen;
  state.user = data.users.find((u) => u.id === picker.value);
  state.dms = await api(`/app/api/dms?user=${state.user.id}`);
  // A DM of the previous user is not this user's: back to the first channel.
  const known = [...data.channels, ...state.dms].some((c) => state.channel && c.id === state.channel.id);
  if (!known) state.channel = data.channels[0];
  const entry = (c, label) => el("li", {
    class: c.id === state.channel.id ? "active" : "", "data-channel-id": c.id,
    onclick: () => { state.channel = c; loadState().then(loadMessages); },
  }, label);
  $("#channels").replaceChildren(...data.channels.map((c) => entry(c, `# ${c.name}`)));
  $("#dms").replaceChildren(...state.dms.map((c) => entry(c, c.label)));
  $("#dms-heading").hidden = state.dms.length === 0;
  $("#channel-header").textContent = channelLabel(state.channel);
  renderSuggestions();
}

function channelLabel(channel) {
  return channel.type === 1 ? channel.label : `# ${channel.name}`;
}

async function loadMessages() {
  const messages = await api(`/app/api/messages?channel=${state.channel.id}&user=${state.user.id}`);
  $("#messages").replaceChildren();
  messages.forEach(showMessage);
}

function connect() {
  if (state.socket) { state.socket.onclose = null; state.socket.close(); }
  const url = new URL(`/app/ws?user=${state.user.id}`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.message) showMessage(data.message);
    else if (data.type === "notice") notice(data.text);
    else if (data.type === "modal_open") showModal(data.modal);
    else if (data.type === "modal_close") hideModal(data.modal);
    else if (["commands_update", "gateway_ready", "gateway_resumed", "dm_open"].includes(data.type)) loadState();
  };
  socket.onopen = () => { document.body.dataset.live = "1"; };
  socket.onclose = () => { document.body.dataset.live = ""; setTimeout(connect, 1000); };
}

async function refreshLog() {
  if (!$("#log-panel").open) return;
  const entries = await api("/app/api/log");
  $("#log").replaceChildren(...entries.slice(-50).map((e) => el("li", { class: e.injected ? "injected" : "" },
    `${e.status} ${e.method} ${e.path}${e.code ? ` (${e.code})` : ""}${e.injected ? " (injected)" : ""}`)));
}

// -- fault injection (see faults.py): what is active shows in the panel's summary ----------------
function showFaults(data) {
  $("#faults-active").textContent = data.text;
  $("#faults-panel").classList.toggle("active", data.active);
}

async function refreshFaults() {
  try { showFaults(await api("/app/api/faults")); } catch (error) { /* the server is restarting */ }
}

// A number input's value, or null when blank: the server says what is missing or wrong.
const numberIn = (sel) => ($(sel).value.trim() === "" ? null : Number($(sel).value));

function setFault(body) {
  api("/app/api/faults", body).then(showFaults).catch((e) => notice(e.message));
}

function faultControls() {
  const scope = () => $("#fault-scope").value;
  const bind = (sel, body) => $(sel).addEventListener("click", () => setFault(body()));
  bind("#fault-fail", () => ({ kind: "fail", count: numberIn("#fault-count"), status: Number($("#fault-status").value), scope: scope() }));
  bind("#fault-outage", () => ({ kind: "outage", seconds: numberIn("#outage-seconds"), status: Number($("#outage-status").value), scope: scope() }));
  bind("#fault-slow", () => ({ kind: "slow", delay: numberIn("#slow-delay"), seconds: numberIn("#slow-seconds"), scope: scope() }));
  bind("#fault-drop", () => ({ kind: "gateway_drop", seconds: numberIn("#drop-seconds") }));
  bind("#fault-clear", () => ({ kind: "clear" }));
}

async function switchUser() {
  $("#messages").replaceChildren();  // nothing of the previous user's view lingers while loading
  await loadState();  // this user's DMs, and out of the previous user's DM
  connect();  // first: the old socket still carries the previous user's ephemeral messages
  await loadMessages();
  await loadModal();  // the previous user's modal is not this one's
}

$("#composer").addEventListener("submit", submit);
$("#command").addEventListener("input", renderSuggestions);
$("#user-picker").addEventListener("change", switchUser);
$("#modal").addEventListener("cancel", (event) => { event.preventDefault(); dismissModal(); });  // Escape
setInterval(refreshLog, 2000);
faultControls();
refreshFaults();
setInterval(refreshFaults, 1000);  // outages end by the clock: polling shows it without server timers
loadState().then(loadMessages).then(loadModal).then(connect).catch((e) => notice(e.message));
