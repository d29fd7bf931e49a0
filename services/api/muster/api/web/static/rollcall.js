/* The roll-call report page, live: follows the page's data-rollcall-stream (SSE) and keeps
 * its counts, bars and "Need help" rows current. Without this script the page is the same
 * as of its last load. What arrives is written with textContent only (never innerHTML).
 *
 * Events: `report` (the whole report, GET /v1/rollcalls/{id}'s body: sent on connect and as
 * it changes) and `help` ({handle, option, note, at}: a new help answer). The stream ends
 * after the report that shows the roll-call closed; the script then stops listening.
 *
 * The lists (who needs help, who has not answered, by team and manager) are not in the
 * stream: when the counts move, the page fetches itself again, at most every LIST_REFRESH_MS,
 * and swaps those sections in — only where the page allows it (data-refresh-lists: the server
 * leaves it off for audiences too big to re-read that often).
 */
(function () {
  "use strict";

  var root = document.getElementById("rollcall-report");
  var source = root && root.getAttribute("data-rollcall-stream");
  if (!source || typeof window.EventSource !== "function") {
    return;
  }
  var LIST_REFRESH_MS = 5000;
  var SECTIONS = ["rc-help", "rc-waiting", "rc-teams", "rc-managers"];
  var refreshLists = root.hasAttribute("data-refresh-lists");
  var lastCounts = null;
  var refreshDue = null;
  var lastRefresh = 0;
  var state = document.getElementById("live-state");
  var announcer = document.getElementById("announcer");
  var labels = {};
  var rows = root.querySelectorAll(".rc-options tr[data-key]");
  for (var i = 0; i < rows.length; i++) {
    labels[rows[i].getAttribute("data-key")] = rows[i].querySelector("th").textContent;
  }

  function show(text, live) {
    if (state) {
      state.hidden = false;
      state.textContent = text;
      state.setAttribute("data-state", live);
    }
  }

  function announce(text) {
    if (announcer) {
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = text; }, 50);
    }
  }

  function setCount(name, value) {
    var found = root.querySelectorAll("[data-count='" + name + "']");
    for (var j = 0; j < found.length; j++) {
      found[j].textContent = String(value);
    }
  }

  function setBar(element, value, max) {
    if (element) {
      element.max = max || 1;
      element.value = value;
    }
  }

  function applyReport(report) {
    var c = report.counts;
    if (!c) {
      return;
    }
    var percent = c.targeted ? Math.round((100 * c.accounted_for) / c.targeted) : 0;
    setCount("percent", percent);
    setCount("targeted", c.targeted);
    setCount("accounted_for", c.accounted_for);
    setCount("help_open", report.help_open || 0);
    setCount("not_answered", c.targeted - c.answered);
    setCount("late", c.late);
    setCount("suspect", c.suspect);
    setBar(document.getElementById("rc-progress"), c.accounted_for, c.targeted);
    Object.keys(c.by_option).forEach(function (key) {
      setCount("opt:" + key, c.by_option[key]);
      setBar(root.querySelector("[data-bar='opt:" + key + "']"), c.by_option[key], c.targeted);
    });
    if (report.state !== "open") {
      root.setAttribute("data-state", report.state);
      var badge = document.getElementById("rc-state");
      if (badge) {
        badge.textContent = report.state;
        badge.setAttribute("data-state", report.state);
      }
      var deadline = document.getElementById("rc-deadline");
      if (deadline) {
        deadline.textContent = "No more answers are taken";
      }
    }
  }

  function swapSections() {
    lastRefresh = Date.now();
    refreshDue = null;
    window.fetch(window.location.pathname, { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (!html) {
        return;
      }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      SECTIONS.forEach(function (id) {
        var now = document.getElementById(id);
        var then = fresh.getElementById(id);
        if (now && then) {
          now.replaceWith(document.importNode(then, true));
        }
      });
    }).catch(function () { /* the next change tries again */ });
  }

  function listsChanged(report) {
    var key = JSON.stringify([report.counts.answered, report.help_open, report.counts.by_option]);
    if (key === lastCounts) {
      return;
    }
    var first = lastCounts === null;
    lastCounts = key;
    if (first || !refreshLists || refreshDue !== null) {
      return;
    }
    var wait = Math.max(0, lastRefresh + LIST_REFRESH_MS - Date.now());
    refreshDue = window.setTimeout(swapSections, wait);
  }

  function addHelp(help) {
    var id = "help-" + help.handle;
    if (document.getElementById(id)) {
      return;
    }
    var template = document.getElementById("help-row-template");
    var body = document.getElementById("help-rows");
    if (!template || !template.content || !body) {
      return;
    }
    var row = template.content.firstElementChild.cloneNode(true);
    row.id = id;
    var values = {
      handle: help.handle,
      handle_name: help.handle,
      option: labels[help.option] || help.option,
      note: help.note || "",
      when: "just now"
    };
    var fields = row.querySelectorAll("[data-field]");
    for (var k = 0; k < fields.length; k++) {
      fields[k].textContent = values[fields[k].getAttribute("data-field")];
    }
    var when = row.querySelector("time");
    if (when) {
      when.setAttribute("datetime", help.at || "");
    }
    var form = row.querySelector("form[data-action]");
    if (form) {
      form.action = form.getAttribute("data-action").replace("{handle}", encodeURIComponent(help.handle));
    }
    body.insertBefore(row, body.firstChild);
    document.getElementById("help-table").hidden = false;
    var empty = document.getElementById("help-empty");
    if (empty) {
      empty.hidden = true;
    }
    announce("@" + help.handle + " needs help" + (help.note ? ": " + help.note.slice(0, 140) : ""));
  }

  var events = new EventSource(source);
  events.addEventListener("open", function () {
    show("Live", "live");
  });
  events.addEventListener("error", function () {
    show(events.readyState === EventSource.CLOSED ? "Not live: reload the page" : "Reconnecting…", "reconnecting");
  });
  events.addEventListener("report", function (event) {
    var report;
    try {
      report = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    applyReport(report);
    if (report.counts) {
      listsChanged(report);
    }
    if (report.state !== "open") {
      events.close();
      show("Closed", "closed");
      announce("The roll-call is closed.");
    }
  });
  events.addEventListener("help", function (event) {
    try {
      addHelp(JSON.parse(event.data));
    } catch (e) {
      return;
    }
  });
})();
