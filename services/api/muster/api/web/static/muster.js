/* Muster's one page script. No build step. Without it every page still works; with it:
 *
 * - times stay relative and fresh ("3 min ago" becomes "1 h ago" on a page left open);
 * - composers count characters against the limit the API enforces;
 * - pages that ask for it update live over server-sent events.
 *
 * Live updates: a page that wants them says so on <body>: data-stream (the SSE URL),
 * data-after (the live position the page was rendered at, so nothing falls between page and
 * stream), data-mode (status, banner, home, dm). New items are copies of a server-rendered
 * <template> filled with textContent only (never innerHTML), so what arrives live is escaped
 * like the page.
 */
(function () {
  "use strict";

  var body = document.body;
  var announcer = document.getElementById("announcer");

  function announce(text) {
    if (announcer) {
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = text; }, 50);
    }
  }

  /* --- times -------------------------------------------------------------------------------
   * The server writes the same texts (web/times.py) so pages read well without this script;
   * this copy exists to keep them fresh on a page left open, and to write the times of what
   * arrives live. Elapsed time only, absolute times in UTC: both sides agree whatever the
   * reader's time zone. tests/web/test_faces.py checks the two agree. */
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function absolute(moment) {
    if (!moment || moment.length < 16) {
      return moment || "";
    }
    return moment.slice(0, 10) + " " + moment.slice(11, 16) + " UTC";
  }

  function relative(moment, now) {
    var then = new Date(moment);
    if (!moment || isNaN(then.getTime())) {
      return moment || "";
    }
    var seconds = (now.getTime() - then.getTime()) / 1000;
    if (seconds < 60) {
      return "just now";
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return minutes + " min ago";
    }
    var hours = Math.floor(minutes / 60);
    if (hours < 24) {
      return hours + " h ago";
    }
    var days = Math.floor(hours / 24);
    if (days === 1) {
      return "yesterday";
    }
    if (days < 7) {
      return days + " days ago";
    }
    var day = then.getUTCDate() + " " + MONTHS[then.getUTCMonth()];
    return then.getUTCFullYear() === now.getUTCFullYear() ? day : day + " " + then.getUTCFullYear();
  }

  function setTime(element, moment, now) {
    element.setAttribute("datetime", moment || "");
    element.setAttribute("title", absolute(moment));
    element.textContent = relative(moment, now);
  }

  function refreshTimes() {
    var now = new Date();
    var found = document.querySelectorAll("time[data-field='when']");
    for (var i = 0; i < found.length; i++) {
      var moment = found[i].getAttribute("datetime");
      if (moment) {
        found[i].textContent = relative(moment, now);
      }
    }
  }

  refreshTimes();
  window.setInterval(refreshTimes, 30000);

  /* --- faces ---------------------------------------------------------------------------------
   * Initials and avatar tone of a handle: web/names.py's rule, for what arrives live. */
  var TONES = 12;

  function initials(name) {
    var words = String(name || "").trim().split(/\s+/).filter(Boolean);
    if (!words.length) {
      return "?";
    }
    var first = Array.from(words[0])[0];
    var last = words.length > 1 ? Array.from(words[words.length - 1])[0] : "";
    return (first + last).toUpperCase();
  }

  function tone(handle) {
    var h = 0;
    for (var i = 0; i < handle.length; i++) {
      h = (Math.imul(h, 31) + handle.charCodeAt(i)) >>> 0;
    }
    return h % TONES;
  }

  /* --- character counters -------------------------------------------------------------------
   * The limit is the API's (MUSTER_MAX_POST_CHARS, in Unicode code points, as the server
   * counts). Nothing is blocked here: the server refuses text over the limit with a clear
   * message. Screen readers hear the count only near and over the limit, once typing pauses. */
  function startCounter(counter) {
    var field = document.getElementById(counter.getAttribute("data-counts"));
    var live = document.getElementById(counter.id + "-live");
    var limit = parseInt(counter.getAttribute("data-limit"), 10);
    if (!field || !limit) {
      return;
    }
    var near = Math.max(20, Math.floor(limit / 10));
    var said = "";
    var pause = null;

    function update() {
      var left = limit - Array.from(field.value).length;
      var state = left < 0 ? "over" : left <= near ? "near" : "ok";
      var text = left < 0
        ? (-left) + (left === -1 ? " character" : " characters") + " over the limit of " + limit
        : left + (left === 1 ? " character" : " characters") + " left";
      counter.textContent = text;
      counter.setAttribute("data-state", state);
      if (pause) {
        window.clearTimeout(pause);
      }
      pause = window.setTimeout(function () {
        var wanted = state === "ok" ? "" : text;
        if (live && wanted !== said) {
          live.textContent = wanted;
          said = wanted;
        }
      }, 700);
    }

    field.addEventListener("input", update);
    update();
  }

  var counters = document.querySelectorAll("[data-counts]");
  for (var c = 0; c < counters.length; c++) {
    startCounter(counters[c]);
  }

  /* --- live updates ------------------------------------------------------------------------ */
  var source = body.getAttribute("data-stream");
  if (!source || typeof window.EventSource !== "function") {
    return;
  }
  var mode = body.getAttribute("data-mode") || "status";
  var me = body.getAttribute("data-me") || "";
  var state = document.getElementById("live-state");

  /* display names: those the page shows, then GET /v1/accounts/{handle} (public) for others */
  var names = {};
  (function seed() {
    var cards = document.querySelectorAll("article.post");
    for (var i = 0; i < cards.length; i++) {
      var handle = cards[i].querySelector("[data-field='as_account']");
      var name = cards[i].querySelector("[data-field='as_name']");
      if (handle && name) {
        names[handle.textContent] = name.textContent;
      }
    }
    var messages = document.querySelectorAll(".message");
    for (var j = 0; j < messages.length; j++) {
      var from = messages[j].querySelector("[data-field='from']");
      var fromName = messages[j].querySelector("[data-field='from_name']");
      if (from && fromName) {
        names[from.textContent] = fromName.textContent;
      }
    }
  })();

  function nameOf(handle, then) {
    if (Object.prototype.hasOwnProperty.call(names, handle)) {
      return names[handle];
    }
    if (typeof window.fetch === "function") {
      window.fetch("/v1/accounts/" + encodeURIComponent(handle), { credentials: "omit" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (account) {
          if (account && account.display_name) {
            names[handle] = account.display_name;
            then();
          }
        })
        .catch(function () { /* the handle stays: it names the account too */ });
    }
    return handle;
  }

  function fill(pattern, item) {
    return pattern.replace(/\{(\w+)\}/g, function (_, name) {
      var value = item[name];
      return encodeURIComponent(value === undefined || value === null ? "" : String(value));
    });
  }

  function show(text) {
    if (state) {
      state.hidden = false;
      state.textContent = text;
    }
  }

  function fillFields(root, item, conditions) {
    var now = new Date();
    var fields = root.querySelectorAll("[data-field]");
    for (var i = 0; i < fields.length; i++) {
      var name = fields[i].getAttribute("data-field");
      if (name === "when") {
        setTime(fields[i], item.created_at, now);
      } else if (name === "when_absolute") {
        fields[i].textContent = " " + absolute(item.created_at);
      } else {
        var value = item[name];
        fields[i].textContent = value === undefined || value === null ? "" : String(value);
      }
    }
    var faces = root.querySelectorAll("[data-face]");
    for (var f = 0; f < faces.length; f++) {
      var handle = String(item[faces[f].getAttribute("data-face")] || "");
      var shown = item[faces[f].getAttribute("data-face") + "_name"] || handle;
      faces[f].textContent = initials(shown);
      faces[f].setAttribute("data-tone", String(tone(handle)));
    }
    var links = root.querySelectorAll("[data-href]");
    for (var j = 0; j < links.length; j++) {
      links[j].setAttribute("href", fill(links[j].getAttribute("data-href"), item));
    }
    var parts = root.querySelectorAll("[data-if]");
    for (var k = 0; k < parts.length; k++) {
      parts[k].hidden = !conditions[parts[k].getAttribute("data-if")];
    }
  }

  function copyOf(templateId) {
    var template = document.getElementById(templateId);
    if (!template || !template.content) {
      return null;
    }
    return template.content.firstElementChild.cloneNode(true);
  }

  function fillPost(item, post) {
    var named = {
      as_account_name: nameOf(post.as_account, function () { fillPost(item, post); }),
      author_name: nameOf(post.author, function () { fillPost(item, post); })
    };
    var values = Object.assign({}, post, named, { as_name: named.as_account_name });
    fillFields(item, values, {
      by: post.author !== post.as_account,
      author_named: named.author_name !== post.author,
      in_reply_to: Boolean(post.in_reply_to) && (
        mode !== "status" || Boolean(document.getElementById("post-" + post.in_reply_to))
      ),
      rollcall: Boolean(post.rollcall),
      mine: post.author === me
    });
  }

  function addPost(post) {
    if (document.getElementById("post-" + post.id)) {
      return; /* already on the page (rendered, or replayed after a reconnect) */
    }
    var list = document.getElementById("posts");
    var item = copyOf("post-template");
    if (!list || !item) {
      return;
    }
    var article = item.querySelector("article");
    article.id = "post-" + post.id;
    article.setAttribute("data-severity", post.severity);
    article.setAttribute("data-visibility", post.visibility);
    article.classList.add("arrived");
    fillPost(item, post);
    if (mode === "status") {
      var previous = list.querySelector("article.current");
      if (previous) {
        previous.classList.remove("current");
      }
      article.classList.add("current"); /* the latest update stands out */
    }
    list.insertBefore(item, list.firstElementChild);
    var empty = document.getElementById("empty");
    if (empty) {
      empty.hidden = true;
    }
    announce("New " + post.severity + " update from " + nameOf(post.as_account, function () {}) +
      ": " + post.text.slice(0, 140));
  }

  function showInBanner(post) {
    var box = document.getElementById("banner");
    if (!box || post.in_reply_to) {
      return; /* the banner shows the latest top-level update */
    }
    box.setAttribute("data-severity", post.severity);
    var text = post.text.length > 240 ? post.text.slice(0, 237) + "..." : post.text;
    fillFields(box, { severity: post.severity, created_at: post.created_at, text: text }, {});
    var badge = box.querySelector(".severity");
    if (badge) {
      badge.hidden = false;
    }
    announce(post.severity + ": " + text);
  }

  function fillMessage(item, message) {
    var values = Object.assign({}, message, {
      from_name: nameOf(message.from, function () { fillMessage(item, message); })
    });
    fillFields(item, values, {});
  }

  function addMessage(message) {
    var other = body.getAttribute("data-with");
    var list = document.getElementById("messages");
    if (!other || !list || message.from !== other) {
      var nav = document.querySelector('header.site a[href="/app/dms"]');
      if (nav && !nav.querySelector(".new")) {
        var marker = document.createElement("span");
        marker.className = "new";
        marker.textContent = " (new)";
        nav.appendChild(marker);
      }
      announce("New message from @" + message.from);
      return;
    }
    if (document.getElementById("dm-" + message.id)) {
      return;
    }
    var item = copyOf("message-template");
    if (!item) {
      return;
    }
    item.id = "dm-" + message.id;
    item.classList.toggle("mine", message.from === me);
    fillMessage(item, message);
    list.appendChild(item);
    var empty = document.getElementById("empty");
    if (empty) {
      empty.hidden = true;
    }
    announce("New message from @" + message.from + ": " + message.text.slice(0, 140));
  }

  var after = body.getAttribute("data-after");
  var url = source;
  if (after) {
    url += (source.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(after);
  }
  var events = new EventSource(url);

  events.addEventListener("open", function () {
    body.setAttribute("data-live", "connected");
    if (state) {
      state.setAttribute("data-state", "live");
    }
    show(mode === "banner" ? "" : "Live");
  });
  events.addEventListener("error", function () {
    body.setAttribute("data-live", events.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    if (state) {
      state.setAttribute("data-state", "reconnecting");
    }
    show(events.readyState === EventSource.CLOSED ? "Not live: reload the page" : "Reconnecting…");
  });
  events.addEventListener("reset", function () {
    show("Some updates were missed: reload the page");
  });
  events.addEventListener("post", function (event) {
    var post;
    try {
      post = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (mode === "banner") {
      showInBanner(post);
    } else if (mode === "status" || mode === "home") {
      addPost(post);
    }
  });
  events.addEventListener("dm", function (event) {
    var message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    addMessage(message);
  });
})();
