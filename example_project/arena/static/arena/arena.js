// The arena demo page: plain JavaScript, no build step, no third-party code.
//
// - API calls go through api(), which shows each call and the replica that answered it
//   (the X-Replica response header) in the "API calls" list.
// - Each answer is an EventSource on /messages/stream/?model=...  Its first event (meta) names
//   the replica.  When that replica drains it ends the stream with a "reconnect" event; the
//   browser reconnects by itself (after the event's retry:) and sends Last-Event-ID, the last
//   token index it saw, so the next replica continues after it.  Tokens are placed by index:
//   one already shown is ignored, a gap restarts the answer from its first token.
// - The chat is a WebSocket on /ws/chat/<room>/; a close (1012 when the replica drains)
//   reconnects after a short pause.
// - The stack panel polls /api/stack/ every two seconds while the page is visible.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const MODELS = ["a", "b"];
  const MAX_CALLS = 12;
  const MAX_CHAT = 50;
  const STACK_EVERY_MS = 2000;

  // --- API calls ----------------------------------------------------------------------------
  function cookie(name) {
    const prefix = name + "=";
    for (const part of document.cookie.split(";")) {
      const item = part.trim();
      if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
    }
    return "";
  }

  function logCall(method, path, status, replica) {
    const list = $("#call-log");
    const item = document.createElement("li");
    const what = document.createElement("code");
    what.textContent = method + " " + path;
    item.append(what, " → " + status + " · ");
    const who = document.createElement("span");
    who.className = "replica-name";
    who.textContent = replica || "no replica";
    item.append(who);
    list.prepend(item);
    while (list.children.length > MAX_CALLS) list.lastElementChild.remove();
  }

  async function api(method, path, body, options) {
    const quiet = options && options.quiet;
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET") init.headers["X-CSRFToken"] = cookie("csrftoken");
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (!quiet) logCall(method, path, "network error", "");
      return { status: 0, data: {}, replica: "" };
    }
    const replica = response.headers.get("X-Replica") || "";
    let data = {};
    try {
      data = await response.json();
    } catch (error) {
      data = {};
    }
    if (!quiet) logCall(method, path, response.status, replica);
    return { status: response.status, data, replica };
  }

  // --- account ------------------------------------------------------------------------------
  let user = document.body.dataset.user || "";

  function showUser() {
    $("#login-form").hidden = Boolean(user);
    $("#logged-in").hidden = !user;
    $("#who").textContent = user;
    updateVote();
  }

  async function login(event) {
    event.preventDefault();
    const username = $("#username").value;
    const password = $("#password").value;
    const result = await api("POST", "/auth/login/", { username, password });
    if (result.status === 200) {
      user = result.data.user;
      $("#password").value = "";
      $("#account-status").textContent = "Logged in as " + user + " (by " + result.replica + ").";
      showUser();
      $("#logout").focus();
      chat.reconnect();
    } else {
      $("#account-status").textContent =
        result.status === 401 ? "Wrong user name or password." : "Login failed (" + result.status + ").";
      $("#password").focus();
    }
  }

  async function logout() {
    const result = await api("POST", "/auth/logout/", {});
    if (result.status === 200) {
      user = "";
      $("#account-status").textContent = "Logged out (by " + result.replica + ").";
      showUser();
      $("#username").focus();
      chat.reconnect();
    } else {
      $("#account-status").textContent = "Logout failed (" + result.status + ").";
    }
  }

  // --- answers ------------------------------------------------------------------------------
  class Answer {
    constructor(model) {
      this.model = model;
      this.el = $("#answer-" + model);
      this.text = $(".text", this.el);
      this.replicasEl = $(".replicas", this.el);
      this.noteEl = $(".note", this.el);
      this.source = null;
      this.run = 0;
    }

    start(prompt, tokens) {
      this.stop();
      this.run += 1;
      this.prompt = prompt;
      this.tokens = tokens;
      this.next = 0;
      this.replicas = [];
      this.reconnects = 0;
      this.retries = 0;
      this.text.textContent = "";
      this.replicasEl.textContent = "connecting…";
      this.noteEl.textContent = "";
      this.setState("streaming");
      this.open();
    }

    setState(state) {
      this.el.dataset.state = state;
      this.text.setAttribute("aria-busy", state === "streaming" ? "true" : "false");
      updateVote();
    }

    open() {
      const params = new URLSearchParams({
        model: this.model,
        prompt: this.prompt,
        tokens: String(this.tokens),
      });
      if (this.next) params.set("from", String(this.next));
      const run = this.run;
      const source = new EventSource("/messages/stream/?" + params.toString());
      this.source = source;
      const mine = (handler) => (event) => {
        if (this.source === source && this.run === run) handler(event);
      };
      source.addEventListener("meta", mine((event) => this.onMeta(JSON.parse(event.data))));
      source.addEventListener("token", mine((event) => this.onToken(JSON.parse(event.data))));
      source.addEventListener("done", mine(() => this.finish("done")));
      source.addEventListener("reconnect", mine(() => this.onReconnect()));
      source.addEventListener("error", mine((event) => this.onError(event)));
    }

    onMeta(meta) {
      this.retries = 0;
      if (this.replicas[this.replicas.length - 1] !== meta.replica) this.replicas.push(meta.replica);
      this.replicasEl.textContent = this.replicas.join(" → ");
      this.el.dataset.replicas = this.replicas.join(" ");
      if (meta.from > 0) {
        this.noteEl.textContent = " (continued from token " + meta.from + ")";
      }
    }

    onToken(token) {
      if (token.index < this.next) return; // already shown: a resumed stream never repeats
      if (token.index > this.next) {
        this.restart("a token was missing");
        return;
      }
      this.text.append((this.next ? " " : "") + token.token);
      this.next += 1;
    }

    onReconnect() {
      this.reconnects += 1;
      this.el.dataset.reconnects = String(this.reconnects);
      this.noteEl.textContent = " (replica draining: reconnecting after token " + this.next + "…)";
    }

    onError(event) {
      if (event.data) {
        // The stream's own error event: the simulated provider failed mid-answer.
        const data = JSON.parse(event.data);
        this.stop();
        this.noteEl.textContent = " (the model failed: upstream " + data.upstream_status + ")";
        this.setState("failed");
        return;
      }
      if (this.source && this.source.readyState === EventSource.CLOSED) {
        // The browser gave up (a non-stream answer such as 502/503): open a new one from here.
        this.source = null;
        this.retries += 1;
        if (this.retries > 5) {
          this.noteEl.textContent = " (gave up after 5 attempts)";
          this.setState("failed");
          return;
        }
        this.noteEl.textContent = " (connection lost: retrying from token " + this.next + "…)";
        const run = this.run;
        setTimeout(() => {
          if (this.run === run && this.el.dataset.state === "streaming") this.open();
        }, 1000 * this.retries);
      }
      // Otherwise the browser is reconnecting by itself (readyState CONNECTING).
    }

    restart(why) {
      this.stop();
      this.next = 0;
      this.text.textContent = "";
      this.noteEl.textContent = " (restarted: " + why + ")";
      this.open();
    }

    finish(state) {
      this.stop();
      if (this.next < this.tokens) {
        this.restart("the stream ended early");
        return;
      }
      if (this.reconnects) {
        this.noteEl.textContent = " (survived " + this.reconnects + " replica drain" +
          (this.reconnects > 1 ? "s" : "") + ")";
      }
      this.setState(state);
    }

    stop() {
      if (this.source) this.source.close();
      this.source = null;
    }
  }

  const answers = MODELS.map((model) => new Answer(model));
  let askedPrompt = "";

  function ask(event) {
    event.preventDefault();
    const prompt = $("#prompt").value.trim();
    if (!prompt) {
      $("#prompt").focus();
      return;
    }
    askedPrompt = prompt;
    const tokens = Number($("#length").value);
    $("#vote-status").textContent = "Both models are answering…";
    answers.forEach((answer) => answer.start(prompt, tokens));
  }

  // --- votes --------------------------------------------------------------------------------
  function allDone() {
    return answers.every((answer) => answer.el.dataset.state === "done");
  }

  function updateVote() {
    const fieldset = $("#vote");
    if (!fieldset) return;
    fieldset.disabled = !(user && allDone());
    if (allDone() && !user) $("#vote-status").textContent = "Log in to vote.";
    else if (allDone() && fieldset.dataset.voted !== askedPrompt) {
      $("#vote-status").textContent = "Both answers are complete: which is better?";
    }
  }

  function showTally(tally) {
    $("#tally").textContent =
      "Votes so far (stored in the database, the same on every replica): Model A " +
      tally.a + " · tie " + tally.tie + " · Model B " + tally.b + ".";
  }

  async function vote(winner) {
    const result = await api("POST", "/api/votes/", { prompt: askedPrompt, winner });
    if (result.status === 201) {
      $("#vote").dataset.voted = askedPrompt;
      $("#vote").disabled = true;
      const label = winner === "tie" ? "a tie" : "Model " + winner.toUpperCase();
      $("#vote-status").textContent = "Vote for " + label + " stored by " + result.replica + ".";
      showTally(result.data.tally);
      $("#ask-button").focus();
    } else {
      $("#vote-status").textContent = "The vote was not stored (" + result.status + ").";
    }
  }

  async function loadTally() {
    const result = await api("GET", "/api/votes/");
    if (result.status === 200) showTally(result.data.tally);
  }

  // --- chat ---------------------------------------------------------------------------------
  const chat = {
    socket: null,
    room: "",
    attempts: 0,
    timer: 0,

    status(text) {
      $("#chat-status").textContent = text;
    },

    join(room) {
      this.room = room;
      this.attempts = 0;
      this.connect();
    },

    reconnect() {
      if (this.room) this.connect();
    },

    connect() {
      clearTimeout(this.timer);
      if (this.socket) {
        const old = this.socket;
        this.socket = null;
        old.close(1000);
      }
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + location.host + "/ws/chat/" + this.room + "/");
      this.socket = socket;
      this.status("Connecting to room " + this.room + "…");
      socket.addEventListener("open", () => {
        if (this.socket !== socket) return;
        this.attempts = 0;
        this.status("Connected to room " + this.room + ".");
        $("#chat").dataset.connected = "true";
      });
      socket.addEventListener("message", (event) => {
        if (this.socket === socket) this.show(JSON.parse(event.data));
      });
      socket.addEventListener("close", (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        $("#chat").dataset.connected = "false";
        this.attempts += 1;
        const pause = Math.min(5000, 300 * this.attempts);
        const why = event.code === 1012 ? "the replica is restarting" : "closed (" + event.code + ")";
        this.status("Disconnected: " + why + "; reconnecting…");
        this.timer = setTimeout(() => this.connect(), pause);
      });
    },

    show(data) {
      if (data.error) {
        this.status("The server refused the message: " + data.error);
        return;
      }
      const item = document.createElement("li");
      const who = document.createElement("strong");
      who.textContent = data.user || "anonymous";
      const text = document.createElement("span");
      text.className = "message";
      text.textContent = data.message;
      const via = document.createElement("span");
      via.className = "via";
      via.textContent = data.from_replica === data.replica
        ? "via " + data.replica
        : "sent via " + data.from_replica + ", delivered by " + data.replica;
      item.append(who, ": ", text, " ", via);
      const log = $("#chat-log");
      log.append(item);
      while (log.children.length > MAX_CHAT) log.firstElementChild.remove();
      log.scrollTop = log.scrollHeight;
    },

    send(text) {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        this.status("Not connected yet: the message was not sent.");
        return false;
      }
      this.socket.send(JSON.stringify({ message: text }));
      return true;
    },
  };

  // --- stack panel --------------------------------------------------------------------------
  function cell(row, text, className) {
    const td = document.createElement(row.children.length ? "td" : "th");
    if (!row.children.length) td.scope = "row";
    if (className) td.className = className;
    td.textContent = text;
    row.append(td);
  }

  function breakerText(breakers) {
    const entries = Object.entries(breakers);
    if (!entries.length) return "none used yet";
    const notClosed = entries.filter(([, state]) => state !== "closed");
    if (!notClosed.length) return "all closed";
    return notClosed.map(([name, state]) => name + " " + state).join(", ");
  }

  async function refreshStack() {
    if (!document.hidden) {
      const result = await api("GET", "/api/stack/", undefined, { quiet: true });
      if (result.status === 200) {
        const body = $("#stack-rows");
        body.replaceChildren();
        for (const replica of result.data.replicas) {
          const row = document.createElement("tr");
          row.dataset.replica = replica.name;
          cell(row, replica.name);
          cell(row, replica.state, "state state-" + replica.state);
          cell(row, String(replica.streams));
          cell(row, String(replica.websockets));
          cell(row, breakerText(replica.breakers));
          body.append(row);
        }
        const time = new Date().toLocaleTimeString();
        $("#stack-meta").textContent = "Served by " + result.replica + " at " + time +
          (result.data.shared ? "; every replica reports through Redis." : "; this process only (no Redis).") +
          " Refreshes every 2 seconds.";
      } else {
        $("#stack-meta").textContent = "The stack panel did not answer (" + (result.status || "network error") + "); retrying.";
      }
    }
    setTimeout(refreshStack, STACK_EVERY_MS);
  }

  // --- wiring -------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    $("#ask-form").addEventListener("submit", ask);
    for (const button of document.querySelectorAll("#vote button")) {
      button.addEventListener("click", () => vote(button.dataset.winner));
    }
    $("#room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const room = $("#room");
      if (room.checkValidity()) chat.join(room.value);
      else room.reportValidity();
    });
    $("#chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("#chat-input");
      const text = input.value.trim();
      if (text && chat.send(text)) input.value = "";
    });
    showUser();
    loadTally();
    chat.join($("#room").value);
    refreshStack();
  });
})();
