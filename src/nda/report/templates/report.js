/* NDA report: view switching, heat-map overlays and patch highlighting. No network, no eval;
   every string from the data is inserted with textContent. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("nda-data").textContent);
  var view = 0;

  function fmt(x) {
    if (x === 0) return "0";
    var a = Math.abs(x);
    return a >= 1000 || a < 1e-3 ? x.toExponential(3) : x.toPrecision(4);
  }
  function pct(x) { return (100 * x).toFixed(x >= 0.1 ? 1 : 2) + "%"; }
  function dec(b64, T) {
    var bin = atob(b64), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return new T(u.buffer);
  }
  function decode(d) {
    d.views.forEach(function (v) { v.here_n = dec(v.here_n, Int32Array); v.here_w = dec(v.here_w, Uint16Array); });
    d.steps.forEach(function (s) {
      s.mp = s.mp.map(function (x) { return dec(x, s.pos16 ? Int16Array : Int32Array); });
      s.mw = s.mw.map(function (x) { return dec(x, Uint8Array); });
    });
    return d;
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function rect(svg, cls, x, y, w, h, opacity) {
    var r = document.createElementNS(SVGNS, "rect");
    r.setAttribute("class", cls);
    r.setAttribute("x", x); r.setAttribute("y", y);
    r.setAttribute("width", w); r.setAttribute("height", h);
    if (opacity !== undefined) {
      r.setAttribute("fill-opacity", (0.35 * opacity).toFixed(3));
      r.setAttribute("stroke-opacity", opacity.toFixed(3));
    }
    svg.appendChild(r);
    return r;
  }

  function Query(section) {
    var self = this;
    this.el = section;
    this.d = decode(data.queries[Number(section.getAttribute("data-q"))]);
    this.sel = 0;
    this.pinned = null;
    this.stack = section.querySelector(".q-stack");
    this.qheat = this.stack.querySelector("img.heat");
    this.qsvg = this.stack.querySelector("svg");
    this.here = section.querySelector(".here");
    this.hereDefault = this.here.innerHTML;
    this.caption = section.querySelector(".qcaption");
    this.props = Array.prototype.slice.call(section.querySelectorAll(".proponent"));
    this.props.forEach(function (li, j) {
      li.addEventListener("click", function () { self.sel = j; self.render(); });
      li.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); self.sel = j; self.render(); }
      });
    });
    this.stack.addEventListener("mousemove", function (ev) {
      if (self.pinned === null) self.highlight(self.pixel(ev));
    });
    this.stack.addEventListener("mouseleave", function () {
      if (self.pinned === null) self.unhighlight();
    });
    this.stack.addEventListener("click", function (ev) {
      var p = self.pixel(ev);
      if (self.pinned && self.pinned[0] === p[0] && self.pinned[1] === p[1]) { self.pinned = null; }
      else { self.pinned = p; self.highlight(p); }
      section.classList.toggle("pinned", self.pinned !== null);
    });
  }

  Query.prototype.pixel = function (ev) {
    var b = this.stack.getBoundingClientRect();
    var x = Math.floor((ev.clientX - b.left) / b.width * this.d.W);
    var y = Math.floor((ev.clientY - b.top) / b.height * this.d.H);
    return [Math.max(0, Math.min(this.d.H - 1, y)), Math.max(0, Math.min(this.d.W - 1, x))];
  };

  Query.prototype.render = function () {
    var v = this.d.views[view], sel = this.sel;
    this.qheat.src = v.qheat[sel];
    this.caption.textContent = "heat: share of each query location explained by #" + (sel + 1) +
      " (max " + pct(v.qmax[sel]) + ")";
    this.props.forEach(function (li, j) {
      li.classList.toggle("selected", j === sel);
      li.setAttribute("aria-pressed", j === sel ? "true" : "false");
      li.querySelector("img.heat").src = v.theat[j];
      li.querySelector(".score").textContent = fmt(v.scores[j]);
    });
    var cells = this.el.querySelectorAll("table.per-t [data-view]");
    Array.prototype.forEach.call(cells, function (c) {
      c.classList.toggle("current", Number(c.getAttribute("data-view")) === view);
    });
    if (this.pinned) this.highlight(this.pinned);
  };

  Query.prototype.unhighlight = function () {
    clear(this.qsvg);
    this.props.forEach(function (li) { clear(li.querySelector("svg")); });
    this.here.innerHTML = this.hereDefault;
    this.el.removeAttribute("data-hover");
  };

  /* Draw, on every proponent, the training patches matched by the query patch(es) at pixel p. */
  Query.prototype.highlight = function (p) {
    var d = this.d, y = p[0], x = p[1], t = data.views[view].t;
    var boxes = this.props.map(function () { return []; });
    var maxw = 0, qP = null;
    d.steps.forEach(function (s) {
      if (t !== null && s.t !== t) return;
      var f = t === null ? s.fall : s.ft;
      var pos = Math.min(y, s.Ho - 1) * s.Wo + Math.min(x, s.Wo - 1);
      if (qP === null) qP = s;
      s.mp.forEach(function (mp, j) {
        for (var i = 0; i < s.r; i++) {
          var lp = mp[pos * s.r + i];
          if (lp < 0) continue;
          var w = f * s.wmax * s.mw[j][pos * s.r + i];
          boxes[j].push([Math.floor(lp / s.Wo) - s.pad, (lp % s.Wo) - s.pad, s.P, w]);
          if (w > maxw) maxw = w;
        }
      });
    });
    this.props.forEach(function (li, j) {
      var svg = li.querySelector("svg");
      clear(svg);
      boxes[j].sort(function (a, b) { return a[3] - b[3]; });
      var shown = 0;
      boxes[j].forEach(function (bx) {
        var o = bx[3] / maxw;
        if (o < 0.06) return;  /* too faint to see */
        rect(svg, "match", bx[1], bx[0], bx[2], bx[2], o);
        shown++;
      });
      li.setAttribute("data-matches", String(shown));
    });
    clear(this.qsvg);
    if (qP) {
      var qi = Math.min(y, qP.Ho - 1), qj = Math.min(x, qP.Wo - 1);
      rect(this.qsvg, "qbox", qj - qP.pad, qi - qP.pad, qP.P, qP.P);
    }
    rect(this.qsvg, "qpix", x, y, 1, 1);
    this.el.setAttribute("data-hover", y + "," + x);
    this.explainHere(y, x);
  };

  Query.prototype.explainHere = function (y, x) {
    var d = this.d, v = d.views[view], base = (y * d.W + x) * d.m;
    clear(this.here);
    var head = document.createElement("div");
    var b = document.createElement("b");
    b.textContent = "pixel (" + y + ", " + x + ")";
    head.appendChild(b);
    head.appendChild(document.createTextNode(" is explained by:"));
    this.here.appendChild(head);
    var ol = document.createElement("ol");
    for (var i = 0; i < d.m; i++) {
      var n = v.here_n[base + i];
      if (n < 0) continue;
      var li = document.createElement("li");
      var nm = document.createElement("span");
      nm.className = "name";
      nm.textContent = d.names[String(n)] !== undefined ? d.names[String(n)] : "#" + n;
      li.appendChild(nm);
      li.appendChild(document.createTextNode(" \u2014 " + pct(v.here_w[base + i] / 65535)));
      ol.appendChild(li);
    }
    this.here.appendChild(ol);
  };

  var queries = Array.prototype.map.call(document.querySelectorAll("section.query"), function (s) {
    return new Query(s);
  });
  function renderAll() { queries.forEach(function (q) { q.render(); }); }

  Array.prototype.forEach.call(document.querySelectorAll("input[name=view]"), function (inp) {
    inp.addEventListener("change", function () {
      if (inp.checked) { view = Number(inp.value); document.body.setAttribute("data-view", inp.value); renderAll(); }
    });
  });
  var op = document.getElementById("opacity");
  op.addEventListener("input", function () {
    document.body.style.setProperty("--heat-opacity", String(Number(op.value) / 100));
  });
  var show = document.getElementById("show-heat");
  show.addEventListener("change", function () { document.body.classList.toggle("no-heat", !show.checked); });
  renderAll();
  document.body.setAttribute("data-ready", "1");
})();
