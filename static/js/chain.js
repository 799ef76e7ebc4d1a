// Live chain pages: the explorer's first page and the hub dashboard.
//
// The socket (/ws/chain/) only says that something changed; the page then pulls
// what it lacks from the API. So a message missed while disconnected costs
// nothing: every (re)connection pulls too.
(function () {
  "use strict";

  var blocks = document.getElementById("chain-blocks");
  if (blocks && blocks.dataset.live !== "true") blocks = null;
  var dashboard = document.getElementById("chain-dashboard");
  var summary = document.getElementById("chain-summary");
  var liveState = document.getElementById("chain-live");
  if (!blocks && !dashboard) {
    if (liveState) liveState.hidden = true;
    return;
  }

  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // The same format as the server's templates: "YYYY-MM-DD HH:MM:SS" in UTC.
  function utc(iso) {
    var date = new Date(iso);
    return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate()) +
      " " + pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + ":" + pad(date.getUTCSeconds());
  }

  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function timeElement(iso) {
    return iso ? element("time", { datetime: iso }, [utc(iso)]) : "—";
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  // Run ``task`` (which returns a promise) once at a time; a call while it runs
  // schedules exactly one more run afterwards.
  function serialised(task) {
    var running = false;
    var again = false;
    function run() {
      if (running) {
        again = true;
        return;
      }
      running = true;
      task().catch(function () { /* the next message or reconnection retries */ })
        .then(function (more) {
          running = false;
          if (again || more === true) {
            again = false;
            run();
          }
        });
    }
    return run;
  }

  function setText(root, field, text) {
    var node = root && root.querySelector('[data-field="' + field + '"]');
    if (node) node.textContent = text;
    return node;
  }

  // --- Explorer ------------------------------------------------------------------

  function blockRow(block) {
    var link = element("a", { href: blocks.dataset.blockUrl + block.height + "/" }, [String(block.height)]);
    var badge = block.is_verified
      ? element("span", { class: "badge badge-ok" }, ["Verified"])
      : element("span", { class: "badge badge-pending" }, ["Not verified yet"]);
    return element("tr", { "data-height": String(block.height), class: "is-new" }, [
      element("td", { "data-label": "Height" }, [link]),
      element("td", { "data-label": "Time (UTC)" }, [timeElement(block.created_at)]),
      element("td", { "data-label": "Transactions" }, [String(block.transaction_count)]),
      element("td", { "data-label": "Hash" }, [
        element("code", { class: "hash", title: block.hash }, [block.hash.slice(0, 16) + "…"]),
      ]),
      element("td", { "data-label": "Verified" }, [badge]),
    ]);
  }

  var refreshBlocks = serialised(function () {
    var top = Number(blocks.dataset.topHeight);
    var url = blocks.dataset.api + "?after=" + top + "&limit=500";
    return getJSON(url).then(function (list) {
      var body = blocks.tBodies[0];
      list.forEach(function (block) {
        if (block.height <= Number(blocks.dataset.topHeight)) return;
        var empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        body.insertBefore(blockRow(block), body.firstChild);
        blocks.dataset.topHeight = String(block.height);
      });
      return refreshSummary().then(function () {
        return list.length === 500; // more to fetch
      });
    });
  });

  function refreshSummary() {
    if (!summary) return Promise.resolve();
    return getJSON(blocks.dataset.statusApi).then(function (status) {
      var own = status.replicas.filter(function (replica) {
        return replica.slug === summary.dataset.tenant;
      })[0];
      if (!own) return;
      setText(summary, "height", String(own.height));
      setText(summary, "behind", String(own.behind));
      setText(summary, "last_verification", own.last_verification);
    });
  }

  // --- Dashboard -----------------------------------------------------------------

  function dashboardRow(replica) {
    var cells = [
      ["Tenant", null], ["Kind", null], ["Height", "height"], ["Behind", "behind"],
      ["Last delivery (UTC)", "last_delivery_at"], ["Verification", "last_verification"],
      ["Verified at (UTC)", "last_verified_at"],
    ].map(function (pair) {
      var attributes = { "data-label": pair[0] };
      if (pair[1]) attributes["data-field"] = pair[1];
      return element("td", attributes);
    });
    cells[0].textContent = replica.slug;
    cells[1].textContent = replica.kind;
    return element("tr", { "data-tenant": replica.slug }, cells);
  }

  function fillCell(row, field, content, className) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    cell.textContent = "";
    cell.appendChild(typeof content === "string" ? document.createTextNode(content) : content);
    cell.className = className || "";
  }

  var refreshDashboard = serialised(function () {
    return getJSON(dashboard.dataset.statusApi).then(function (status) {
      var hubHeight = document.getElementById("hub-height");
      if (hubHeight) hubHeight.textContent = String(status.hub_height);
      var body = dashboard.tBodies[0];
      status.replicas.forEach(function (replica) {
        var row = body.querySelector('tr[data-tenant="' + replica.slug + '"]');
        if (!row) {
          row = dashboardRow(replica);
          body.appendChild(row);
        }
        var failed = replica.last_verification !== "ok" && replica.last_verification !== "never";
        fillCell(row, "height", String(replica.height));
        fillCell(row, "behind", String(replica.behind), replica.behind ? "lagging" : "");
        fillCell(row, "last_delivery_at", timeElement(replica.last_delivery_at));
        fillCell(row, "last_verification", replica.last_verification, failed ? "failed" : "");
        fillCell(row, "last_verified_at", timeElement(replica.last_verified_at));
      });
    });
  });

  // --- The socket ----------------------------------------------------------------

  function refreshAll() {
    if (blocks) refreshBlocks();
    if (dashboard) refreshDashboard();
  }

  function showState(state, text) {
    if (!liveState) return;
    liveState.dataset.state = state;
    liveState.textContent = text;
  }

  var delay = 1000;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/chain/");
    socket.onmessage = function (message) {
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (event.type === "hello") {
        // Joined: from now on nothing is missed; pull what came before.
        delay = 1000;
        showState("live", "Live: changes appear as they happen.");
        refreshAll();
      } else if (event.type === "block") {
        refreshAll();
      } else if (event.type === "replica" && dashboard) {
        refreshDashboard();
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4401 || event.code === 4403) {
        showState("off", "Live updates are off: sign in again and reload.");
        return;
      }
      showState("reconnecting", "Reconnecting… reload to see new blocks meanwhile.");
      var wait = delay + Math.floor(Math.random() * 500);
      delay = Math.min(delay * 2, 30000);
      setTimeout(connect, wait);
    };
  }

  showState("connecting", "Connecting for live updates…");
  connect();
})();
