// Live notifications for the signed-in person (/ws/events/).
//
// On a {"type": "notification"} message the page (a) announces its text in an
// aria-live region and (b) re-reads every element marked data-live-refresh:
// it fetches the page (the attribute's URL, else this one) and swaps the
// element's content for the same element's in the response. The socket only
// says that something changed, so a message missed while disconnected costs
// nothing: every (re)connection re-reads too. Without JavaScript, or without
// WebSocket, the page keeps saying "reload to see changes".
(function () {
  "use strict";

  var state = document.getElementById("events-live");
  var announcer = document.getElementById("events-announcer");

  function showState(name, text) {
    if (!state) return;
    state.dataset.state = name;
    state.textContent = text;
  }

  if (typeof window.WebSocket !== "function" || typeof window.fetch !== "function") return;

  if (!announcer) {
    announcer = document.createElement("p");
    announcer.id = "events-announcer";
    announcer.className = "visually-hidden";
    announcer.setAttribute("role", "status");
    announcer.setAttribute("aria-live", "polite");
    document.body.appendChild(announcer);
  }

  function announce(text) {
    if (!text) return;
    announcer.hidden = false;
    announcer.textContent = String(text);
  }

  // --- Re-reading the live parts of the page ---------------------------------------

  var running = false;
  var again = false;

  function refresh() {
    var targets = Array.prototype.slice.call(document.querySelectorAll("[data-live-refresh][id]"));
    if (!targets.length) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    var url = targets[0].getAttribute("data-live-refresh") || window.location.href;
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        targets.forEach(function (target) {
          var replacement = fresh.getElementById(target.id);
          if (replacement) target.innerHTML = replacement.innerHTML;
        });
      })
      .catch(function () { /* the next message or reconnection retries */ })
      .then(function () {
        running = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  // --- The socket ----------------------------------------------------------------------

  var delay = 1000;

  function retry() {
    showState("reconnecting", "Reconnecting… reload to see changes meanwhile.");
    var wait = delay + Math.floor(Math.random() * 500);
    delay = Math.min(delay * 2, 30000);
    window.setTimeout(connect, wait);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + "/ws/events/");
    } catch (error) {
      retry();
      return;
    }
    socket.onmessage = function (message) {
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (!event || typeof event !== "object") return;
      if (event.type === "hello") {
        delay = 1000;
        showState("live", "Live: changes appear here as they happen.");
        refresh();
      } else if (event.type === "notification") {
        announce(event.text);
        refresh();
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4401 || event.code === 4403) {
        showState("off", "Live updates are off: sign in again and reload.");
        return;
      }
      retry();
    };
  }

  showState("connecting", "Connecting for live updates… reload to see changes meanwhile.");
  connect();
})();
