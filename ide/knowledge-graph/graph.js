// The knowledge graph page: asks GraphQL for a workspace's graph with the
// signed-in session (its CSRF token from /auth/session) and draws it with
// force-graph. After each frame, #graph carries data-drawn-nodes (the nodes
// painted in that frame), data-nodes, data-edges and data-frames, so a test
// (or a person) can see what was drawn.
(function () {
  "use strict";
  var LIMIT = 1000;
  var GRAPH = "query($w: ID!, $n: Int) { knowledgeGraph(workspaceId: $w, limit: $n) {" +
    " nodes { id slug title degree } edges { source target } truncated } }";
  var ENTRY = "query($w: ID!, $s: String!) { knowledgeEntry(workspaceId: $w, slug: $s) { title slug contentHtml } }";

  var picker = document.getElementById("workspace");
  var status = document.getElementById("status");
  var box = document.getElementById("graph");
  var panel = document.getElementById("entry");
  var csrf = "";
  var graph = null;
  var painted = {};
  var frames = 0;

  function gql(query, variables) {
    return fetch("/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "x-mosaic-csrf": csrf },
      body: JSON.stringify({ query: query, variables: variables })
    }).then(function (r) { return r.json(); }).then(function (body) {
      if (body.errors && body.errors.length) { throw new Error(body.errors[0].message); }
      return body.data;
    });
  }

  function fail(e) {
    status.textContent = "error: " + e.message;
    box.dataset.state = "error";
  }

  function paintNode(node, ctx, scale) {
    painted[node.id] = true;
    var r = 3 + Math.sqrt(node.degree);
    ctx.beginPath();
    ctx.arc(node.x, node.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = node.degree ? "#3b6fd4" : "#999";
    ctx.fill();
    if (scale > 1.2) {
      ctx.font = (11 / scale) + "px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      ctx.fillStyle = "#333";
      ctx.fillText(node.title, node.x, node.y + r + 1);
    }
  }

  function paintArea(node, color, ctx) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(node.x, node.y, 5 + Math.sqrt(node.degree), 0, 2 * Math.PI);
    ctx.fill();
  }

  function show(node) {
    document.getElementById("entry-title").textContent = node.title;
    document.getElementById("entry-slug").textContent = node.slug;
    document.getElementById("entry-link").href = "#" + encodeURIComponent(picker.value) + "/" + encodeURIComponent(node.slug);
    document.getElementById("entry-content").textContent = "";
    panel.hidden = false;
    gql(ENTRY, { w: picker.value, s: node.slug }).then(function (data) {
      // contentHtml is sanitised by the server (no raw HTML, no script URLs).
      if (data.knowledgeEntry) { document.getElementById("entry-content").innerHTML = data.knowledgeEntry.contentHtml; }
    }).catch(fail);
  }

  function draw(g) {
    var nodes = g.nodes.map(function (n) { return { id: n.id, slug: n.slug, title: n.title, degree: n.degree }; });
    var links = g.edges.map(function (e) { return { source: e.source, target: e.target }; });
    if (!graph) {
      graph = ForceGraph()(box)
        .nodeLabel("title")
        .nodeCanvasObject(paintNode)
        .nodePointerAreaPaint(paintArea)
        .linkDirectionalArrowLength(3)
        .linkDirectionalArrowRelPos(1)
        // Laid out before the first frame, then settles briefly on screen.
        .warmupTicks(100)
        .cooldownTicks(50)
        .onNodeClick(show)
        .onRenderFramePre(function () { painted = {}; })
        .onRenderFramePost(function () {
          frames += 1;
          box.dataset.drawnNodes = String(Object.keys(painted).length);
          box.dataset.frames = String(frames);
        })
        .onEngineStop(function () { graph.zoomToFit(0, 40); box.dataset.state = "settled"; });
      // For tests and the browser console.
      window.mosaicGraph = graph;
    }
    frames = 0;
    box.dataset.state = "drawing";
    box.dataset.nodes = String(nodes.length);
    box.dataset.edges = String(links.length);
    graph.width(box.clientWidth).height(box.clientHeight).graphData({ nodes: nodes, links: links });
    status.textContent = nodes.length + " entries, " + links.length + " links" +
      (g.truncated ? " (the first " + LIMIT + " only)" : "");
  }

  function load() {
    status.textContent = "loading\u2026";
    panel.hidden = true;
    gql(GRAPH, { w: picker.value, n: LIMIT }).then(function (data) { draw(data.knowledgeGraph); }).catch(fail);
  }

  picker.addEventListener("change", load);
  window.addEventListener("resize", function () {
    if (graph) { graph.width(box.clientWidth).height(box.clientHeight); }
  });

  fetch("/auth/session", { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (r) {
      if (!r.ok) { throw new Error("not signed in"); }
      return r.json();
    })
    .then(function (session) {
      csrf = session.csrfToken;
      return gql("{ workspaces { id name } }", {});
    })
    .then(function (data) {
      data.workspaces.forEach(function (w) {
        var option = document.createElement("option");
        option.value = w.id;
        option.textContent = w.name;
        picker.appendChild(option);
      });
      if (!data.workspaces.length) {
        status.textContent = "you are in no workspace yet";
        return;
      }
      var wanted = decodeURIComponent(location.hash.slice(1).split("/")[0] || "");
      if (data.workspaces.some(function (w) { return w.id === wanted; })) { picker.value = wanted; }
      picker.disabled = false;
      load();
    })
    .catch(fail);
})();
