/* Muster's one page script: live updates over server-sent events. No build step.
 *
 * A page that wants them says so on <body>: data-stream (the SSE URL), data-after (the live
 * position the page was rendered at, so nothing falls between page and stream), data-mode
 * (status, banner, home, dm). New items are copies of a server-rendered <template> filled
 * with textContent only (never innerHTML), so what arrives live is escaped like the page.
 * Without this script every page still works; it just does not update by itself.
 */
(function () {
  "use strict";

  var body = document.body;
  var source = body.getAttribute("data-stream");
  if (!source || typeof window.EventSource !== "function") {
    return;
  }
  var mode = body.getAttribute("data-mode") || "status";
  var me = body.getAttribute("data-me") || "";
  var state = document.getElementById("live-state");
  var announcer = document.getElementById("announcer");

  function when(createdAt) {
    /* the server's format (html.when): 2025-03-01 14:03 UTC */
    if (!createdAt || createdAt.length < 16) {
      return createdAt || "";
    }
    return createdAt.slice(0, 10) + " " + createdAt.slice(11, 16) + " UTC";
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

  function announce(text) {
    if (announcer) {
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = text; }, 50);
    }
  }

  function fillFields(root, item, conditions) {
    var fields = root.querySelectorAll("[data-field]");
    for (var i = 0; i < fields.length; i++) {
      var name = fields[i].getAttribute("data-field");
      if (name === "when") {
        fields[i].textContent = when(item.created_at);
        fields[i].setAttribute("datetime", item.created_at || "");
      } else {
        var value = item[name];
        fields[i].textContent = value === undefined || value === null ? "" : String(value);
      }
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
    fillFields(item, post, {
      by: post.author !== post.as_account,
      in_reply_to: Boolean(post.in_reply_to) && (
        mode !== "status" || Boolean(document.getElementById("post-" + post.in_reply_to))
      ),
      mine: post.author === me
    });
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
    announce("New " + post.severity + " update from @" + post.as_account + ": " + post.text.slice(0, 140));
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
    fillFields(item, message, {});
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
