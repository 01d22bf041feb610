// The federation console: peers, their grants and the request audit, all
// through /graphql with the signed-in session (its CSRF token from
// /auth/session). Peers choose their own names, so everything from the
// server is set as text, never as HTML.
//
// The grant form mirrors the checks of a scope document
// (src/federation/grant.rs, Terms::checked): contradicting choices disable
// each other, and `problems` lists what is still wrong, with the field the
// server would name, while the submit button stays disabled. What the
// server refuses anyway is shown with its code.
(function () {
  "use strict";
  var AUDIT_PAGE = 20;
  var PEER_FIELDS = "id name baseUrl pendingName pendingBaseUrl inboundState outboundState keyFingerprints" +
    " lastContactAt recentLatencyMs errorCount successCount" +
    " grant { workspaces readWrite users forward resources excludedResources writeResources" +
    " readableResources writableResources maxRowsPerQuery rateLimit { perSecond burst }" +
    " userMappings { remote localUserId } unmapped }";
  var LOAD = "{ grantOptions { resources maxRowsPerQuery maxPerSecond maxBurst maxUsers maxUserMappings }" +
    " workspaces { id name } users(first: 100) { id email } }";
  var PEERS = "{ peers { " + PEER_FIELDS + " } }";
  var CONNECT = "mutation($url: String!) { connectPeer(url: $url) { id name outboundState } }";
  var APPROVE = "mutation($i: ApprovePeerInput!) { approvePeer(input: $i) { id } }";
  var SET_GRANT = "mutation($i: SetPeerGrantInput!) { setPeerGrant(input: $i) { id } }";
  var REVOKE = "mutation($p: String!) { revokePeer(peerId: $p) { id inboundState outboundState } }";
  var AUDIT = "query($first: Int, $after: String, $filter: FederationAuditFilter) {" +
    " federationAudit(first: $first, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor }" +
    " edges { node { at peerId verified verb resources outcome code rows bytes latencyMs } } } }";
  var USER_ID = /^User:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  function $(id) { return document.getElementById(id); }

  var csrf = "";
  var options = null;
  var workspaces = [];
  var users = [];
  var peers = [];
  var editing = null;
  var auditAfter = null;
  var auditAsked = 0;

  // A GraphQL request; fails with the first error's message and code.
  function gql(query, variables) {
    return fetch("/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "x-mosaic-csrf": csrf },
      body: JSON.stringify({ query: query, variables: variables || {} })
    }).then(function (r) { return r.json(); }).then(function (body) {
      if (body.errors && body.errors.length) {
        var e = new Error(body.errors[0].message);
        e.code = (body.errors[0].extensions || {}).code || "";
        throw e;
      }
      return body.data;
    });
  }

  function describe(e) {
    if (e.code === "FORBIDDEN") { return "only instance administrators manage federation (FORBIDDEN)"; }
    return (e.code ? e.code + ": " : "") + e.message;
  }

  function fail(e) {
    $("error").textContent = describe(e);
    $("error").hidden = false;
    document.body.dataset.state = "error";
  }

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function cell(row, col, text) {
    var td = el("td", text, { "data-col": col });
    row.appendChild(td);
    return td;
  }

  function workspaceName(id) {
    var w = workspaces.filter(function (w) { return w.id === id; })[0];
    return w ? w.name : id;
  }

  function peerName(id) {
    var p = peers.filter(function (p) { return p.id === id; })[0];
    return p ? p.name : (id || "(unknown)");
  }

  // ---- peers ----

  function grantSummary(p) {
    var g = p.grant;
    if (p.inboundState === "none" || !g.workspaces.length) { return "none"; }
    var parts = [
      g.workspaces.map(workspaceName).join(", "),
      "reads " + (g.readableResources.join(", ") || "nothing"),
      g.readWrite ? "writes " + (g.writableResources.join(", ") || "nothing") : "read-only"
    ];
    if (g.maxRowsPerQuery !== null) { parts.push("max " + g.maxRowsPerQuery + " rows"); }
    if (g.rateLimit) { parts.push(g.rateLimit.perSecond + "/s, burst " + g.rateLimit.burst); }
    if (g.forward) { parts.push("forwards"); }
    if (g.users) { parts.push(g.users.length + " remote user(s) only"); }
    if (g.userMappings.length) { parts.push(g.userMappings.length + " mapped"); }
    if (g.unmapped === "REFUSE") { parts.push("unmapped refused"); }
    return parts.join("; ");
  }

  function health(p) {
    var parts = [];
    parts.push(p.lastContactAt ? "last contact " + p.lastContactAt : "never contacted");
    if (p.recentLatencyMs !== null) { parts.push("median " + p.recentLatencyMs + " ms"); }
    parts.push(p.successCount + " ok, " + p.errorCount + " failed");
    return parts.join("; ");
  }

  function button(text, name, onClick) {
    var b = el("button", text, { type: "button", "data-action": name });
    b.addEventListener("click", onClick);
    return b;
  }

  function confirmRevoke(p, actions) {
    actions.textContent = "";
    actions.appendChild(el("span", "Revoke " + p.name + " both ways? ", { "data-role": "confirm" }));
    actions.appendChild(button("Yes, revoke", "confirm-revoke", function () {
      actions.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      gql(REVOKE, { p: p.id }).then(function () {
        if (editing && editing.id === p.id) { closeGrant(); }
        return loadPeers();
      }).catch(fail);
    }));
    actions.appendChild(button("Cancel", "cancel-revoke", function () { renderPeers(); }));
  }

  function renderPeers() {
    var body = $("peers").querySelector("tbody");
    body.textContent = "";
    peers.forEach(function (p) {
      var row = el("tr", null, { "data-peer-id": p.id });
      var name = cell(row, "name", p.name);
      if (p.pendingName) { name.appendChild(el("div", "announces the name " + p.pendingName)); }
      var url = cell(row, "baseUrl", p.baseUrl);
      if (p.pendingBaseUrl) { url.appendChild(el("div", "announces " + p.pendingBaseUrl)); }
      cell(row, "inbound", p.inboundState);
      cell(row, "outbound", p.outboundState);
      var keys = cell(row, "keys");
      p.keyFingerprints.forEach(function (k) { keys.appendChild(el("div", k, { "class": "fingerprint" })); });
      cell(row, "health", health(p));
      cell(row, "grant", grantSummary(p));
      var actions = cell(row, "actions");
      if (p.inboundState === "pending" || p.inboundState === "suspended") {
        actions.appendChild(button("Approve\u2026", "approve", function () { openGrant(p, true); }));
      } else if (p.inboundState === "active") {
        actions.appendChild(button("Edit grant\u2026", "edit", function () { openGrant(p, false); }));
      }
      var live = ["pending", "active", "suspended", "requested"];
      if (live.indexOf(p.inboundState) >= 0 || live.indexOf(p.outboundState) >= 0) {
        actions.appendChild(button("Revoke\u2026", "revoke", function () { confirmRevoke(p, actions); }));
      }
      body.appendChild(row);
    });
    $("no-peers").hidden = peers.length > 0;
    var picker = $("audit-peer");
    var chosen = picker.value;
    while (picker.options.length > 1) { picker.remove(1); }
    peers.forEach(function (p) { picker.appendChild(el("option", p.name, { value: p.id })); });
    picker.value = chosen;
    if (picker.value !== chosen) { picker.value = ""; }
  }

  function loadPeers() {
    return gql(PEERS).then(function (data) {
      peers = data.peers;
      renderPeers();
      $("status").textContent = peers.length + " peer(s)";
    });
  }

  $("peers-refresh").addEventListener("click", function () { loadPeers().catch(fail); });

  $("connect").addEventListener("submit", function (event) {
    event.preventDefault();
    var url = $("connect-url").value.trim();
    $("connect-result").textContent = "asking\u2026";
    $("connect-submit").disabled = true;
    gql(CONNECT, { url: url }).then(function (data) {
      $("connect-result").textContent = data.connectPeer.name + ": " + data.connectPeer.outboundState;
      $("connect-url").value = "";
      return loadPeers();
    }).catch(function (e) {
      $("connect-result").textContent = describe(e);
    }).then(function () { $("connect-submit").disabled = false; });
  });

  // ---- the grant form ----

  function checkbox(list, name, value, label, checked) {
    var box = el("input", null, { type: "checkbox", name: name, value: value });
    box.checked = checked;
    var wrap = el("label");
    wrap.appendChild(box);
    wrap.appendChild(document.createTextNode(" " + label));
    list.appendChild(wrap);
    return box;
  }

  function boxes(name) {
    return Array.prototype.slice.call($("grant").querySelectorAll("input[name=" + name + "]"));
  }

  function checked(name) {
    return boxes(name).filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
  }

  function mode(name) {
    return $("grant").querySelector("input[name=" + name + "]:checked").value;
  }

  function setMode(name, value) {
    $("grant").querySelector("input[name=" + name + "][value=" + value + "]").checked = true;
  }

  function addMapping(remote, localUserId) {
    var row = el("div", null, { "class": "mapping" });
    var input = el("input", null, { type: "text", size: "36", placeholder: "e-mail address or User:<instance>:<user>", "data-role": "remote" });
    input.value = remote || "";
    var pick = el("select", null, { "data-role": "local" });
    pick.appendChild(el("option", "(a local user)", { value: "" }));
    users.forEach(function (u) { pick.appendChild(el("option", u.email, { value: u.id })); });
    if (localUserId && !users.some(function (u) { return u.id === localUserId; })) {
      pick.appendChild(el("option", localUserId, { value: localUserId }));
    }
    pick.value = localUserId || "";
    row.appendChild(input);
    row.appendChild(pick);
    row.appendChild(button("Remove", "remove-mapping", function () { row.remove(); sync(); }));
    $("grant-mappings").appendChild(row);
  }

  function openGrant(p, approving) {
    editing = { id: p.id, approving: approving };
    var g = p.grant;
    var fresh = p.inboundState !== "active" && p.inboundState !== "suspended";
    $("grant-title").textContent = (approving ? "Approve " : "Edit the grant of ") + p.name;
    $("grant-submit").textContent = approving ? "Approve" : "Save the grant";
    $("grant-error").hidden = true;

    var list = $("grant-workspaces");
    list.querySelectorAll("label").forEach(function (l) { l.remove(); });
    var granted = fresh ? [] : g.workspaces;
    workspaces.forEach(function (w) { checkbox(list, "workspace", w.id, w.name, granted.indexOf(w.id) >= 0); });
    // A granted workspace the admin is not a member of is kept, by ID.
    granted.forEach(function (id) {
      if (!workspaces.some(function (w) { return w.id === id; })) { checkbox(list, "workspace", id, id, true); }
    });

    var resources = fresh ? null : g.resources;
    var excluded = fresh ? [] : g.excludedResources;
    var write = fresh ? null : g.writeResources;
    setMode("resources-mode", resources ? "only" : "all");
    setMode("write-mode", write ? "only" : "all");
    ["grant-resource-list", "grant-excluded-list", "grant-write-list"].forEach(function (id) { $(id).textContent = ""; });
    options.resources.forEach(function (r) {
      checkbox($("grant-resource-list"), "resource", r, r, !!resources && resources.indexOf(r) >= 0);
      checkbox($("grant-excluded-list"), "excluded", r, r, excluded.indexOf(r) >= 0);
      checkbox($("grant-write-list"), "write", r, r, !!write && write.indexOf(r) >= 0);
    });
    $("grant-read-write").checked = !fresh && g.readWrite;
    $("grant-forward").checked = !fresh && g.forward;
    $("grant-max-rows").max = String(options.maxRowsPerQuery);
    $("grant-max-rows").value = fresh || g.maxRowsPerQuery === null ? "" : String(g.maxRowsPerQuery);
    $("grant-per-second").max = String(options.maxPerSecond);
    $("grant-burst").max = String(options.maxBurst);
    $("grant-rate-on").checked = !fresh && !!g.rateLimit;
    if (!fresh && g.rateLimit) {
      $("grant-per-second").value = String(g.rateLimit.perSecond);
      $("grant-burst").value = String(g.rateLimit.burst);
    }
    $("grant-users-on").checked = !fresh && !!g.users;
    $("grant-users").value = !fresh && g.users ? g.users.join("\n") : "";
    $("grant-mappings").textContent = "";
    (fresh ? [] : g.userMappings).forEach(function (m) { addMapping(m.remote, m.localUserId); });
    $("grant-unmapped").value = fresh ? "GUEST" : g.unmapped;
    $("grant-section").hidden = false;
    sync();
    $("grant-section").scrollIntoView();
  }

  function closeGrant() {
    editing = null;
    $("grant-section").hidden = true;
  }

  function mappings() {
    return Array.prototype.slice.call($("grant-mappings").querySelectorAll(".mapping")).map(function (row) {
      return {
        remote: row.querySelector("[data-role=remote]").value.trim(),
        localUserId: row.querySelector("[data-role=local]").value
      };
    });
  }

  function lines(text) {
    return text.split("\n").map(function (l) { return l.trim(); }).filter(function (l) { return l !== ""; });
  }

  // The scope document the form says (the input of approvePeer/setPeerGrant).
  function scope() {
    var rate = $("grant-rate-on").checked;
    var rows = $("grant-max-rows").value.trim();
    return {
      peerId: editing.id,
      workspaceIds: checked("workspace"),
      readWrite: $("grant-read-write").checked,
      users: $("grant-users-on").checked ? lines($("grant-users").value) : null,
      forward: $("grant-forward").checked,
      resources: mode("resources-mode") === "only" ? checked("resource") : null,
      excludedResources: checked("excluded"),
      writeResources: $("grant-read-write").checked && mode("write-mode") === "only" ? checked("write") : null,
      maxRowsPerQuery: rows === "" ? null : Number(rows),
      rateLimit: rate ? { perSecond: Number($("grant-per-second").value), burst: Number($("grant-burst").value) } : null,
      userMappings: mappings(),
      unmapped: $("grant-unmapped").value
    };
  }

  function isAddress(s) {
    var at = s.indexOf("@");
    return at > 0 && at < s.length - 1 && s.indexOf("@", at + 1) < 0 && s.length <= 320 && !/[\s\u0000-\u001f\u007f]/.test(s);
  }

  function readable(doc) {
    return (doc.resources || options.resources).filter(function (r) { return doc.excludedResources.indexOf(r) < 0; });
  }

  // What Terms::checked would refuse, each starting with the field it names.
  function problems(doc) {
    var out = [];
    if (!doc.workspaceIds.length) { out.push("workspaceIds: grant at least one workspace"); }
    if (doc.users) {
      if (!doc.users.length) { out.push("users: name at least one remote user, or untick the limit"); }
      if (doc.users.length > options.maxUsers) { out.push("users: at most " + options.maxUsers + " users per grant"); }
      doc.users.forEach(function (u) {
        if (!USER_ID.test(u) && !isAddress(u)) {
          out.push("users: '" + u + "' is neither an e-mail address nor a global User ID (User:<instance>:<user>)");
        }
      });
    }
    (doc.resources || []).forEach(function (r) {
      if (doc.excludedResources.indexOf(r) >= 0) {
        out.push("excludedResources: '" + r + "' is also in resources; name it in one of them");
      }
    });
    var canRead = readable(doc);
    if (!canRead.length) { out.push("resources: the scope grants no resource; name at least one"); }
    if (doc.writeResources) {
      if (!doc.readWrite) { out.push("writeResources: only a read-write grant writes"); }
      doc.writeResources.forEach(function (r) {
        if (canRead.indexOf(r) < 0) { out.push("writeResources: '" + r + "' is not among the resources granted"); }
      });
    }
    var n = doc.maxRowsPerQuery;
    if (n !== null && !(Number.isInteger(n) && n >= 1 && n <= options.maxRowsPerQuery)) {
      out.push("maxRowsPerQuery: must be a whole number within 1.." + options.maxRowsPerQuery);
    }
    if (doc.rateLimit) {
      var ps = doc.rateLimit.perSecond;
      var burst = doc.rateLimit.burst;
      if (!(ps > 0 && ps <= options.maxPerSecond)) {
        out.push("rateLimit.perSecond: must be above 0 and at most " + options.maxPerSecond);
      }
      if (!(Number.isInteger(burst) && burst >= 1 && burst <= options.maxBurst)) {
        out.push("rateLimit.burst: must be a whole number within 1.." + options.maxBurst);
      }
    }
    if (doc.userMappings.length > options.maxUserMappings) {
      out.push("userMappings: at most " + options.maxUserMappings + " per grant");
    }
    var seen = {};
    doc.userMappings.forEach(function (m) {
      if (!USER_ID.test(m.remote) && !isAddress(m.remote)) {
        out.push("userMappings.remote: '" + m.remote + "' is neither an e-mail address nor a global User ID");
      }
      var key = USER_ID.test(m.remote) ? m.remote : m.remote.toLowerCase();
      if (seen[key]) { out.push("userMappings.remote: '" + m.remote + "' is mapped twice"); }
      seen[key] = true;
      if (!m.localUserId) { out.push("userMappings.localUserId: choose the local user " + m.remote + " acts as"); }
    });
    if (doc.unmapped === "REFUSE" && !doc.userMappings.length) {
      out.push("unmapped: REFUSE with no userMappings would refuse everyone; map someone");
    }
    return out;
  }

  function enable(box, on) {
    box.disabled = !on;
    box.parentNode.classList.toggle("disabled", !on);
  }

  // Makes contradicting choices impossible, then lists what is still missing.
  function sync() {
    if (!editing) { return; }
    var only = mode("resources-mode") === "only";
    var included = only ? checked("resource") : [];
    var excluded = checked("excluded");
    boxes("resource").forEach(function (b) { enable(b, only && excluded.indexOf(b.value) < 0); });
    boxes("excluded").forEach(function (b) { enable(b, included.indexOf(b.value) < 0); });
    var rw = $("grant-read-write").checked;
    document.querySelectorAll("input[name=write-mode]").forEach(function (b) { enable(b, rw); });
    var doc = scope();
    var canRead = readable(doc);
    boxes("write").forEach(function (b) {
      var possible = rw && mode("write-mode") === "only" && canRead.indexOf(b.value) >= 0;
      if (!possible && canRead.indexOf(b.value) < 0) { b.checked = false; }
      enable(b, possible);
    });
    var rate = $("grant-rate-on").checked;
    $("grant-per-second").disabled = !rate;
    $("grant-burst").disabled = !rate;
    $("grant-users").disabled = !$("grant-users-on").checked;
    $("grant-unmapped").querySelector("option[value=REFUSE]").disabled = !mappings().length;
    doc = scope();
    var found = problems(doc);
    var list = $("grant-problems");
    list.textContent = "";
    found.forEach(function (p) { list.appendChild(el("li", p, { "data-field": p.split(":")[0] })); });
    $("grant-submit").disabled = found.length > 0;
    $("grant").dataset.valid = String(found.length === 0);
  }

  $("grant").addEventListener("input", sync);
  $("grant").addEventListener("change", sync);
  $("grant-add-mapping").addEventListener("click", function () { addMapping("", ""); sync(); });
  $("grant-cancel").addEventListener("click", closeGrant);

  $("grant").addEventListener("submit", function (event) {
    event.preventDefault();
    sync();
    if (!editing || $("grant-submit").disabled) { return; }
    var doc = scope();
    $("grant-submit").disabled = true;
    $("grant-error").hidden = true;
    gql(editing.approving ? APPROVE : SET_GRANT, { i: doc }).then(function () {
      closeGrant();
      return loadPeers();
    }).catch(function (e) {
      // The server's message starts with the field it refused.
      $("grant-error").textContent = describe(e);
      $("grant-error").dataset.field = e.message.split(":")[0];
      $("grant-error").hidden = false;
      $("grant-submit").disabled = false;
    });
  });

  // ---- the request audit ----

  function loadAudit(more) {
    var filter = {};
    if ($("audit-peer").value) { filter.peerId = $("audit-peer").value; }
    if ($("audit-outcome").value) { filter.outcome = $("audit-outcome").value; }
    var vars = { first: AUDIT_PAGE, after: more ? auditAfter : null, filter: filter };
    var asked = ++auditAsked;
    $("audit").dataset.asked = String(asked);
    return gql(AUDIT, vars).then(function (data) {
      // Only the latest request's answer is shown (filters change quickly).
      if (asked !== auditAsked) { return; }
      var a = data.federationAudit;
      var body = $("audit").querySelector("tbody");
      if (!more) { body.textContent = ""; }
      a.edges.forEach(function (edge) {
        var n = edge.node;
        var row = el("tr");
        cell(row, "at", n.at);
        cell(row, "peer", peerName(n.peerId));
        cell(row, "verified", n.verified ? "yes" : "no");
        cell(row, "verb", n.verb);
        cell(row, "resources", n.resources.join(", "));
        cell(row, "outcome", n.outcome);
        cell(row, "code", n.code || "");
        cell(row, "rows", n.rows);
        cell(row, "bytes", n.bytes);
        cell(row, "latency", n.latencyMs + " ms");
        body.appendChild(row);
      });
      auditAfter = a.pageInfo.endCursor;
      $("audit-more").hidden = !a.pageInfo.hasNextPage;
      $("audit-count").textContent = body.rows.length + " of " + a.totalCount;
      $("audit").dataset.shown = String(asked);
    });
  }

  $("audit-refresh").addEventListener("click", function () { loadAudit(false).catch(fail); });
  $("audit-peer").addEventListener("change", function () { loadAudit(false).catch(fail); });
  $("audit-outcome").addEventListener("change", function () { loadAudit(false).catch(fail); });
  $("audit-more").addEventListener("click", function () { loadAudit(true).catch(fail); });

  // ---- start ----

  fetch("/auth/session", { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (r) {
      if (!r.ok) { throw new Error("not signed in"); }
      return r.json();
    })
    .then(function (session) {
      csrf = session.csrfToken;
      return gql(LOAD);
    })
    .then(function (data) {
      options = data.grantOptions;
      workspaces = data.workspaces;
      users = data.users;
      return loadPeers();
    })
    .then(function () { return loadAudit(false); })
    .then(function () { document.body.dataset.state = "ready"; })
    .catch(fail);
})();
