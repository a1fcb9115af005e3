/* eqaudit sample explorer: draws any sample's orbit from the page's embedded table (#eqaudit-samples).
   Own code, no library and no network: inline SVG for the plots, a canvas for the input thumbnail.
   window.eqauditShowSample(k) opens the view of row k of orbits.npz in #sample-view; the points of the
   sample maps call it when clicked or when Enter/Space is pressed on a focused point. */
(function () {
  "use strict";
  var block = document.getElementById("eqaudit-samples");
  var view = document.getElementById("sample-view");
  if (!block || !view) return;
  var D = JSON.parse(block.textContent);
  var probe = document.createElement("div");
  probe.innerHTML = "<svg>";  // the SVG namespace, as the HTML parser gives it (no URL written here)
  var SVGNS = probe.firstChild.namespaceURI;
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  var pos = null;
  if (D.rows) { pos = new Map(); D.rows.forEach(function (r, i) { pos.set(r, i); }); }

  function position(k) {
    if (pos) return pos.has(k) ? pos.get(k) : -1;
    return k >= 0 && k < D.n ? k : -1;
  }
  function bytes(b64) {
    var s = atob(b64), a = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  function half(u) {  // IEEE half-precision bits -> numbers
    var out = new Float32Array(u.length);
    for (var i = 0; i < u.length; i++) {
      var b = u[i], sgn = b & 0x8000 ? -1 : 1, ex = (b >> 10) & 31, fr = b & 1023;
      out[i] = sgn * (ex === 0 ? fr * Math.pow(2, -24) : ex === 31 ? (fr ? NaN : Infinity) : (1 + fr / 1024) * Math.pow(2, ex - 15));
    }
    return out;
  }
  function decode(t) {  // typed arrays of one trace, decoded on first use
    if (!t.v) {
      t.v = new Float32Array(bytes(t.values).buffer);
      var P = {"u1": Uint8Array, "<i2": Int16Array, "<i4": Int32Array}[t.pred_type] || Int32Array;
      t.p = t.pred ? new P(bytes(t.pred).buffer) : null;
      t.f = t.floor ? half(new Uint16Array(bytes(t.floor).buffer)) : null;
    }
    return t;
  }
  function row(arr, i, e) { return arr ? Array.prototype.slice.call(arr, i * e, (i + 1) * e) : null; }
  function className(c) { return D.classes && c >= 0 && c < D.classes.length ? D.classes[c] : String(c); }
  function fmt(v) { return v == null || !isFinite(v) ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3); }
  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function s(parent, tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function colour(t) {  // viridis at t in [0, 1]
    t = Math.max(0, Math.min(1, isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(t), VIRIDIS.length - 2), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (c) { return Math.round(a[c] + f * (b[c] - a[c])); }).join(",") + ")";
  }
  function tip(g, e, v, p) {
    return g.labels[e] + ": " + g.metric + " " + fmt(v) + (p != null ? ", predicts " + className(p) : "");
  }

  /* one-parameter orbits: line (x = parameter) or polar (angle = parameter in degrees, radius = value) */
  function curves(g, traces, vmax) {
    var polar = g.layout === "polar", W = polar ? 300 : 460, H = polar ? 300 : 210;
    var svg = s(null, "svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "orbit-plot", role: "img",
                             "aria-label": g.metric + " over the orbit of " + g.spec});
    var order = g.param.map(function (_, i) { return i; }).sort(function (a, b) { return g.param[a] - g.param[b]; });
    var x0 = g.param[order[0]], x1 = g.param[order[order.length - 1]];
    var cx = W / 2, cy = H / 2, R = W / 2 - 30, L = 46, T = 12, PW = W - L - 12, PH = H - T - 36;
    function at(x, v) {
      if (polar) {
        var a = (x * Math.PI) / 180, r = (R * v) / vmax;
        return [cx + r * Math.cos(a), cy - r * Math.sin(a)];
      }
      return [L + (x1 > x0 ? ((x - x0) / (x1 - x0)) * PW : PW / 2), T + PH - (PH * v) / vmax];
    }
    if (polar) {
      [0.5, 1].forEach(function (f) { s(svg, "circle", {cx: cx, cy: cy, r: R * f, fill: "none", stroke: "#ccd", "stroke-dasharray": f < 1 ? "3 3" : ""}); });
      s(svg, "text", {x: cx + R + 2, y: cy - 3, "font-size": 10, fill: "#667"}, "0°");
      s(svg, "text", {x: cx + 3, y: cy - R * 0.5 - 2, "font-size": 9, fill: "#667"}, fmt(vmax / 2));
      s(svg, "text", {x: cx + 3, y: cy - R - 2, "font-size": 9, fill: "#667"}, fmt(vmax));
    } else {
      s(svg, "rect", {x: L, y: T, width: PW, height: PH, fill: "none", stroke: "#ccd"});
      s(svg, "text", {x: L - 4, y: T + 4, "font-size": 10, "text-anchor": "end", fill: "#667"}, fmt(vmax));
      s(svg, "text", {x: L - 4, y: T + PH, "font-size": 10, "text-anchor": "end", fill: "#667"}, "0");
      s(svg, "text", {x: L, y: H - 18, "font-size": 10, fill: "#667"}, fmt(x0));
      s(svg, "text", {x: L + PW, y: H - 18, "font-size": 10, "text-anchor": "end", fill: "#667"}, fmt(x1));
      s(svg, "text", {x: L + PW / 2, y: H - 4, "font-size": 11, "text-anchor": "middle", fill: "#333"}, g.axis);
      var id = at(g.param[g.identity], 0)[0];
      s(svg, "line", {x1: id, x2: id, y1: T, y2: T + PH, stroke: "#999", "stroke-dasharray": "2 3"});
    }
    traces.forEach(function (tr) {
      var gEl = s(svg, "g", {class: "trace", "data-model": tr.model, fill: tr.color, stroke: tr.color});
      function path(vals, dashed) {
        var pts = order.map(function (e) { return at(g.param[e], vals[e]).map(function (c) { return c.toFixed(1); }).join(","); });
        if (polar) pts.push(pts[0]);
        s(gEl, "polyline", {points: pts.join(" "), fill: "none", "stroke-width": dashed ? 1 : 1.6,
                            "stroke-dasharray": dashed ? "4 3" : "", class: dashed ? "floor" : "curve"});
      }
      if (tr.floor) path(tr.floor, true);
      path(tr.values, false);
      order.forEach(function (e) {
        var p = at(g.param[e], tr.values[e]);
        var c = s(gEl, "circle", {cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: 2.6, class: "pt", "data-element": e,
                                 fill: tr.pred && tr.pred[e] !== tr.pred[g.identity] ? "#fff" : tr.color});
        s(c, "title", {}, tr.name + " · " + tip(g, e, tr.values[e], tr.pred ? tr.pred[e] : null));
      });
    });
    return svg;
  }

  /* finite groups (tiles, the predicted class written in) and 2-D grids (heatmap): one panel per model */
  function cells(g, traces, vmax) {
    var rows = g.cells.shape[0], cols = g.cells.shape[1], small = rows * cols > 100;
    var C = Math.max(8, Math.min(44, Math.floor(440 / cols))), head = 16;
    var W = cols * C + 8, H = traces.length * (rows * C + head + 6) + 4;
    var svg = s(null, "svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "orbit-plot", role: "img",
                             "aria-label": g.metric + " over the orbit of " + g.spec});
    traces.forEach(function (tr, m) {
      var top = m * (rows * C + head + 6);
      var gEl = s(svg, "g", {class: "trace", "data-model": tr.model});
      s(gEl, "text", {x: 4, y: top + 12, "font-size": 11, fill: tr.color, "font-weight": 600}, tr.name);
      g.cells.index.forEach(function (e, i) {
        if (e < 0) return;
        var x = 4 + (i % cols) * C, y = top + head + Math.floor(i / cols) * C, v = tr.values[e];
        var r = s(gEl, "rect", {x: x, y: y, width: C - 1, height: C - 1, fill: colour(v / vmax), class: "pt", "data-element": e,
                               stroke: e === g.identity ? "#d33" : "none"});
        s(r, "title", {}, tr.name + " · " + tip(g, e, v, tr.pred ? tr.pred[e] : null));
        if (tr.pred && !small && C >= 22) {
          s(gEl, "text", {x: x + C / 2, y: y + C / 2 + 4, "font-size": 10, "text-anchor": "middle", "pointer-events": "none",
                          fill: v / vmax > 0.6 ? "#000" : "#fff"}, className(tr.pred[e]).slice(0, 5));
        }
      });
    });
    return svg;
  }

  function picture(src, wid, hgt, ch, attrs) {  // 8-bit pixels (h, w, ch) -> an <img> (lossless PNG)
    var cv = document.createElement("canvas");
    cv.width = wid; cv.height = hgt;
    var ctx = cv.getContext("2d"), img = ctx.createImageData(wid, hgt);
    for (var p = 0; p < hgt * wid; p++) {
      for (var c = 0; c < 3; c++) img.data[4 * p + c] = src[p * ch + (ch === 3 ? c : 0)];
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    attrs.src = cv.toDataURL("image/png");
    return h("img", attrs);
  }
  function smallOf(i) {
    var sh = D.small.shape, n = sh[0] * sh[1] * sh[2];
    if (!D.small.bytes) D.small.bytes = bytes(D.small.data);
    return D.small.bytes.subarray(i * n, (i + 1) * n);
  }
  /* 3-D rotations: each at its rotation vector (angle/180° times its axis) seen from +z, the upper and lower
     halves of the ball as two discs (and two more for the improper elements of o3), one row per model */
  function discs(g, traces, vmax) {
    var d = g.discs, halves = [];
    [false, true].forEach(function (imp) {
      if (imp && d.improper.indexOf(true) < 0) return;
      [true, false].forEach(function (up) { halves.push({imp: imp, up: up, title: (imp ? "−I · " : "") + (up ? "z ≥ 0" : "z < 0")}); });
    });
    var R = 56, gap = 16, head = 16, rowH = 2 * R + head + 22, W = halves.length * (2 * R + gap) + 8, H = traces.length * rowH + 4;
    var size = Math.max(2, Math.min(5, 140 / Math.sqrt(g.labels.length)));
    var svg = s(null, "svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "orbit-plot", role: "img",
                             "aria-label": g.metric + " over the orbit of " + g.spec + " at each rotation vector"});
    traces.forEach(function (tr, m) {
      var top = m * rowH, gEl = s(svg, "g", {class: "trace", "data-model": tr.model});
      s(gEl, "text", {x: 4, y: top + 12, "font-size": 11, fill: tr.color, "font-weight": 600}, tr.name);
      halves.forEach(function (hv, n) {
        var cx = 4 + R + n * (2 * R + gap), cy = top + head + R + 2;
        s(gEl, "circle", {cx: cx, cy: cy, r: R, fill: "none", stroke: "#999"});
        s(gEl, "text", {x: cx, y: cy + R + 14, "font-size": 10, "text-anchor": "middle", fill: "#667"}, hv.title);
        d.xy.forEach(function (p, e) {
          if (d.up[e] !== hv.up || d.improper[e] !== hv.imp) return;
          var x = (cx + p[0] * R).toFixed(1), y = (cy - p[1] * R).toFixed(1);
          var c = s(gEl, "circle", {cx: x, cy: y, r: size, fill: colour(tr.values[e] / vmax), stroke: "#555", "stroke-width": 0.4,
                                   class: "pt", "data-element": e});
          s(c, "title", {}, tr.name + " · " + tip(g, e, tr.values[e], tr.pred ? tr.pred[e] : null));
          if (e === g.identity) s(gEl, "circle", {cx: x, cy: y, r: size + 3, fill: "none", stroke: "#d33", "stroke-width": 1.2});
        });
      });
    });
    return svg;
  }

  /* what box and flow models output on the untransformed input, over its thumbnail (input pixels), per model */
  function withOutputs(img, i) {
    var hw = D.input_hw, own = D.models.filter(function (m) { return m.box || m.flow; });
    if (!hw || !own.length || !D.small) return img;
    var box = h("div", {class: "sv-thumb"}), H = hw[0], W = hw[1];
    box.appendChild(img);
    var svg = s(box, "svg", {viewBox: "0 0 " + W + " " + H, class: "sv-outputs", preserveAspectRatio: "none",
                             "aria-label": "what each model output on this input"});
    var flows = [], longest = 0;
    own.forEach(function (m) {
      if (m.box) {
        if (!m.box.v) m.box.v = new Float32Array(bytes(m.box.data).buffer);
        var b = m.box.v.subarray(4 * i, 4 * i + 4);
        var r = s(svg, "rect", {x: b[0], y: b[1], width: Math.max(0, b[2] - b[0]), height: Math.max(0, b[3] - b[1]), fill: "none",
                                stroke: m.color, "stroke-width": W / 40, class: "out-box"});
        s(r, "title", {}, m.name + ": box " + Array.prototype.map.call(b, fmt).join(", "));
      }
      if (m.flow) {
        if (!m.flow.v) m.flow.v = half(new Uint16Array(bytes(m.flow.data).buffer));
        var sh = m.flow.shape, k = sh[1] * sh[2], f = m.flow.v.subarray(2 * k * i, 2 * k * (i + 1));
        for (var q = 0; q < k; q++) longest = Math.max(longest, Math.hypot(f[q], f[k + q]));
        flows.push([m, f, sh]);
      }
    });
    flows.forEach(function (x) {
      var m = x[0], f = x[1], fh = x[2][1], fw = x[2][2], k = fh * fw, bw = W / fw, bh = H / fh;
      var sc = longest > 0 ? (0.9 * Math.min(bw, bh)) / longest : 0;
      for (var q = 0; q < k; q++) {
        var cx = ((q % fw) + 0.5) * bw, cy = (Math.floor(q / fw) + 0.5) * bh, tx = cx + f[q] * sc, ty = cy + f[k + q] * sc;
        s(svg, "line", {x1: cx, y1: cy, x2: tx, y2: ty, stroke: m.color, "stroke-width": W / 60, class: "out-arrow"});
        s(svg, "circle", {cx: tx, cy: ty, r: W / 50, fill: m.color});
      }
    });
    return box;
  }

  function thumbnail(i) {
    if (D.points) {
      var p = cloudOf(i);
      return cloud(p, frameOf([p]), 96, {class: "sample-cloud", "aria-label": "the untransformed points"});
    }
    if (!D.small) return null;
    var sh = D.small.shape;
    return picture(smallOf(i), sh[1], sh[0], sh[2], {class: "sample-thumb", width: 96, alt: "the untransformed input"});
  }
  /* one pixel step of eqaudit.report.moves: ["d", k, f, axis] rot90^k after a flip, or ["s", dx, dy, wrap] */
  function step(src, hgt, wid, ch, st) {
    var out = new Uint8Array(src.length), C = [1, 0, -1, 0][st[1]], S = [0, 1, 0, -1][st[1]];
    for (var r = 0; r < hgt; r++) {
      for (var c = 0; c < wid; c++) {
        var sr, sc;
        if (st[0] === "d") {  // doubled centred coordinates, as eqaudit.symmetries.images
          var U = 2 * c - (wid - 1), V = 2 * r - (hgt - 1), us = C * U - S * V, vs = S * U + C * V;
          if (st[2]) { if (st[3] === "v") vs = -vs; else us = -us; }
          sr = (vs + hgt - 1) / 2; sc = (us + wid - 1) / 2;
        } else {
          sr = r - st[2]; sc = c - st[1];
          if (st[3]) { sr = ((sr % hgt) + hgt) % hgt; sc = ((sc % wid) + wid) % wid; }
        }
        if (sr < 0 || sr >= hgt || sc < 0 || sc >= wid) continue;  // zeros enter
        for (var q = 0; q < ch; q++) out[(r * wid + c) * ch + q] = src[(sr * wid + sc) * ch + q];
      }
    }
    return out;
  }
  /* ["r", angle, factor]: turn by angle degrees (counter-clockwise as displayed) and zoom by factor about the
     centre, zeros outside, as eqaudit's rotate and scale; drawn by the browser (bilinear): approximate */
  function resampled(src, hgt, wid, ch, st) {
    var out = new Uint8Array(src.length), a = document.createElement("canvas"), b = document.createElement("canvas");
    a.width = b.width = wid; a.height = b.height = hgt;
    var ca = a.getContext("2d"), cb = b.getContext("2d", {willReadFrequently: true}), img = ca.createImageData(wid, hgt);
    for (var g = 0; g < ch; g += 3) {  // up to three channels per pass, as red, green and blue
      for (var p = 0; p < hgt * wid; p++) {
        for (var c = 0; c < 3; c++) img.data[4 * p + c] = src[p * ch + Math.min(g + c, ch - 1)];
        img.data[4 * p + 3] = 255;
      }
      ca.putImageData(img, 0, 0);
      cb.setTransform(1, 0, 0, 1, 0, 0);
      cb.fillStyle = "#000";
      cb.fillRect(0, 0, wid, hgt);
      // output(p) = input(R(angle) p / factor) in y-down pixels: the canvas turns by -angle
      cb.translate(wid / 2, hgt / 2);
      cb.rotate(-st[1] * Math.PI / 180);
      cb.scale(st[2], st[2]);
      cb.translate(-wid / 2, -hgt / 2);
      cb.drawImage(a, 0, 0);
      var d = cb.getImageData(0, 0, wid, hgt).data;
      for (var q = 0; q < hgt * wid; q++) for (var c2 = 0; c2 < 3 && g + c2 < ch; c2++) out[q * ch + g + c2] = d[4 * q + c2];
    }
    return out;
  }
  function moved(i, steps) {
    var sh = D.small.shape, x = smallOf(i);
    steps.forEach(function (st) { x = (st[0] === "r" ? resampled : step)(x, sh[0], sh[1], sh[2], st); });
    return x;
  }
  /* the elements whose inputs the view shows: all of a small orbit, else the identity, the sample's worst
     element and evenly spaced ones (as eqaudit.report.thumbs chooses them for the worst samples) */
  function shownElements(g, traces) {
    var E = g.labels.length, ok = [];
    for (var e = 0; e < E; e++) if (g.moves[e]) ok.push(e);
    if (ok.length <= 9) return ok;
    var order = g.param ? ok.slice().sort(function (a, b) { return g.param[a] - g.param[b]; }) : ok;
    var worst = -1, best = -Infinity;
    ok.forEach(function (e) {
      var v = Math.max.apply(null, traces.map(function (t) { return t.values[e]; }));
      if (e !== g.identity && v > best) { best = v; worst = e; }
    });
    var chosen = [g.identity, worst].filter(function (e) { return g.moves[e]; });
    for (var n = 0; n < 6 && chosen.length < 6; n++) {
      var e2 = order[Math.round((n * (order.length - 1)) / 5)];
      if (chosen.indexOf(e2) < 0) chosen.push(e2);
    }
    return order.filter(function (e) { return chosen.indexOf(e) >= 0; });
  }
  /* point clouds: a few points of each sample (float16), drawn as a depth-shaded scatter seen from one oblique
     direction, every cloud of a view in one frame so that shifts show as moves */
  function cloudOf(i) {
    if (!D.points.v) D.points.v = half(new Uint16Array(bytes(D.points.data).buffer));
    var n = D.points.shape[0] * 3;
    return Array.prototype.slice.call(D.points.v, i * n, (i + 1) * n);
  }
  function movedCloud(p, a) {  // x -> M x + t, a = the 3x3 matrix row by row, then the shift
    var out = [];
    for (var q = 0; q < p.length; q += 3) {
      for (var r = 0; r < 3; r++) out.push(a[3 * r] * p[q] + a[3 * r + 1] * p[q + 1] + a[3 * r + 2] * p[q + 2] + a[9 + r]);
    }
    return out;
  }
  function frameOf(clouds) {
    var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    clouds.forEach(function (p) { for (var q = 0; q < p.length; q++) { lo[q % 3] = Math.min(lo[q % 3], p[q]); hi[q % 3] = Math.max(hi[q % 3], p[q]); } });
    var c = [0, 1, 2].map(function (a) { return (lo[a] + hi[a]) / 2; });
    return {c: c, r: Math.max(1e-9, Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) * 0.75)};
  }
  function cloud(p, frame, size, attrs) {
    var svg = s(null, "svg", Object.assign({viewBox: "0 0 " + size + " " + size, width: size, height: size, role: "img"}, attrs));
    s(svg, "rect", {x: 0, y: 0, width: size, height: size, fill: "#fafbfc", stroke: "#dde2e7"});
    var ca = Math.cos(0.6), sa = Math.sin(0.6), ce = Math.cos(0.45), se = Math.sin(0.45), pts = [];
    for (var q = 0; q < p.length; q += 3) {
      var x = (p[q] - frame.c[0]) / frame.r, y = (p[q + 1] - frame.c[1]) / frame.r, z = (p[q + 2] - frame.c[2]) / frame.r;
      var x1 = x * ca - y * sa, y1 = x * sa + y * ca;
      pts.push([x1, -(z * ce + y1 * se), y1 * ce - z * se]);
    }
    pts.sort(function (a, b) { return b[2] - a[2]; });  // far points first
    pts.forEach(function (pt) {
      var t = Math.max(0, Math.min(1, (1 - pt[2]) / 2));
      s(svg, "circle", {cx: ((0.5 + pt[0] / 2) * size).toFixed(1), cy: ((0.5 + pt[1] / 2) * size).toFixed(1),
                        r: Math.max(1.2, size / 60).toFixed(1), fill: colour(0.15 + 0.7 * t)});
    });
    return svg;
  }
  function movedClouds(g, traces, i, box) {
    var base = cloudOf(i), shown = shownElements(g, traces);
    var clouds = shown.map(function (e) { return movedCloud(base, g.moves[e]); });
    var frame = frameOf(clouds.concat([base]));
    shown.forEach(function (e, n) {
      var fig = h("figure", {class: "sv-move", "data-element": e});
      fig.appendChild(cloud(clouds[n], frame, 64, {class: "moved-cloud", "data-element": e, "aria-label": "the points moved by " + g.labels[e],
                                                  "data-coords": JSON.stringify(clouds[n].map(function (v) { return +v.toPrecision(5); }))}));
      fig.appendChild(h("figcaption", {}, g.labels[e] + predsAt(traces, e)));
      box.appendChild(fig);
    });
    return box;
  }
  function predsAt(traces, e) {
    var preds = traces.filter(function (t) { return t.pred; }).map(function (t) { return className(t.pred[e]); });
    return preds.length ? " → " + preds.join(" / ") : "";
  }
  function movedInputs(g, traces, i) {
    var box = h("div", {class: "sv-moves"});
    if (g.kind === "points") {
      if (D.points && g.moves) return movedClouds(g, traces, i, box);
      box.appendChild(h("p", {class: "muted"}, "This result does not hold the action of " + g.spec + " on coordinates: the points are not shown moved."));
      return box;
    }
    if (!D.small) return box;
    if (!g.moves) {
      box.appendChild(h("p", {class: "muted"}, "The inputs are shown moved for exact image actions only: " + g.spec + (g.exact
                        ? " acts on more than the pixels' places (frames or channels), which this small thumbnail does not show,"
                        : " resamples the input (its result is not a pixel permutation),") + " so only the untransformed input is shown above."));
      return box;
    }
    var sh = D.small.shape;
    shownElements(g, traces).forEach(function (e) {
      var fig = h("figure", {class: "sv-move", "data-element": e});
      fig.appendChild(picture(moved(i, g.moves[e]), sh[1], sh[0], sh[2], {class: "moved-thumb", width: 56, "data-element": e,
                                                                      alt: "the input moved by " + g.labels[e]}));
      fig.appendChild(h("figcaption", {}, g.labels[e] + predsAt(traces, e)));
      box.appendChild(fig);
    });
    if (g.moves.some(function (m) { return m && m.some(function (st) { return st[0] === "r"; }); })) {
      box.appendChild(h("p", {class: "muted"}, "Turns and zooms that are not pixel permutations are resampled in this page " +
                        "from the small thumbnail (approximate)."));
    }
    if (g.moves.some(function (m) { return !m; })) {
      box.appendChild(h("p", {class: "muted"}, "Shifts that are not whole pixels of this small thumbnail are not shown."));
    }
    return box;
  }

  function show(k, focusGroup) {
    k = Number(k);
    var i = position(k);
    view.textContent = "";
    view.hidden = false;
    var close = h("button", {type: "button", class: "close", "aria-label": "close the sample view"}, "×");
    close.addEventListener("click", function () { view.hidden = true; });
    view.appendChild(close);
    view.appendChild(h("h3", {}, "sample " + k));
    if (i < 0) {
      view.appendChild(h("p", {class: "muted"}, "sample " + k + " is not embedded in this page. " + (D.note || "")));
      return false;
    }
    var facts = "data-file row " + D.sample_index[i];
    if (D.labels) facts += " · true class " + className(D.labels[i]);
    view.appendChild(h("p", {class: "facts"}, facts));
    var top = h("div", {class: "sv-top"});
    var th = thumbnail(i);
    if (th) top.appendChild(withOutputs(th, i));
    var ul = h("ul", {class: "sv-models"});
    D.models.forEach(function (m, mi) {
      var li = h("li", {});
      li.appendChild(h("span", {class: "swatch", style: "background:" + m.color}));
      li.appendChild(h("code", {title: m.path}, m.name));
      D.groups.forEach(function (g) {
        g.traces.forEach(function (t) {
          if (t.model !== mi) return;
          decode(t);
          var e = g.labels.length, p = t.p ? t.p[i * e + g.identity] : null;
          if (p != null && !li.dataset.pred) { li.dataset.pred = "1"; li.appendChild(document.createTextNode(" predicts " + className(p) + " untransformed")); }
        });
      });
      ul.appendChild(li);
    });
    top.appendChild(ul);
    if (top.querySelector("svg.sv-outputs")) {
      ul.appendChild(h("li", {class: "muted"}, "over the input: what each model output on it (its box or flow), in its colour"));
    }
    view.appendChild(top);
    var target = null;
    D.groups.forEach(function (g, gi) {
      var E = g.labels.length, vmax = 1e-9;
      var traces = g.traces.map(function (t) {
        decode(t);
        var tr = {model: t.model, name: D.models[t.model].name, color: D.models[t.model].color,
                  values: row(t.v, i, E), pred: row(t.p, i, E), floor: row(t.f, i, E)};
        if (tr.floor && tr.floor.some(isNaN)) tr.floor = null;  // the floor is measured on a subset of the samples
        tr.values.concat(tr.floor || []).forEach(function (v) { if (isFinite(v)) vmax = Math.max(vmax, v); });
        return tr;
      });
      var fig = h("figure", {class: "sv-group", "data-group": gi});
      var mean = traces.map(function (t) {
        var sum = 0, c = 0;
        t.values.forEach(function (v, e) { if (e !== g.identity || E === 1) { sum += v; c++; } });
        var flips = t.pred ? t.pred.filter(function (p) { return p !== t.pred[g.identity]; }).length : null;
        return t.name + ": mean " + fmt(sum / Math.max(c, 1)) + (flips != null ? ", " + flips + "/" + (E - 1) + " flips" : "");
      });
      fig.appendChild(h("figcaption", {}, g.spec + " — " + g.metric + " (" + mean.join("; ") + ")"));
      fig.appendChild(g.discs ? discs(g, traces, vmax) : g.cells ? cells(g, traces, vmax) : curves(g, traces, vmax));
      if (g.discs) {
        fig.appendChild(h("p", {class: "muted"}, "each rotation at its rotation vector (angle/180° times its axis) seen from +z: the identity " +
                          "at the centre (red ring), half turns on the rim; colour: " + g.metric + ", 0 … " + fmt(vmax)));
      }
      if (g.cells && g.cells.x) {  // a 2-D grid: say which way its axes run
        fig.appendChild(h("p", {class: "muted"}, "columns: " + g.cells.x[0] + " " + fmt(g.cells.x[1]) + " … " + fmt(g.cells.x[2]) +
                          " (left to right); rows: " + g.cells.y[0] + " " + fmt(g.cells.y[1]) + " … " + fmt(g.cells.y[2]) +
                          " (top to bottom); red outline: the identity; colour: " + g.metric + ", 0 … " + fmt(vmax)));
      } else if (g.cells) {
        fig.appendChild(h("p", {class: "muted"}, "red outline: the identity; written in: the class predicted there; colour: " +
                          g.metric + ", 0 … " + fmt(vmax)));
      }
      if (traces.some(function (t) { return t.floor; })) fig.appendChild(h("p", {class: "muted"}, "dashed: the floor (the resampling round trip alone)"));
      if (D.small || D.points) fig.appendChild(movedInputs(g, traces, i));
      view.appendChild(fig);
      if (focusGroup != null && String(g.index) === String(focusGroup)) target = fig;
    });
    if (D.note) view.appendChild(h("p", {class: "muted"}, D.note));
    if (target) view.scrollTop = target.offsetTop - 40;
    return true;
  }
  window.eqauditShowSample = function (k) { return show(k, null); };

  /* the sample maps' colours: any model's orbit mean or the difference of two models, from the embedded table */
  function means(g, t) {  // per embedded row: the mean of the main metric over the non-identity elements
    decode(t);
    if (!t.mean) {
      var E = g.labels.length, n = t.v.length / E;
      t.mean = new Float32Array(n);
      for (var i = 0; i < n; i++) {
        var sum = 0, c = 0;
        for (var e = 0; e < E; e++) if (e !== g.identity || E === 1) { sum += t.v[i * E + e]; c++; }
        t.mean[i] = sum / Math.max(c, 1);
      }
    }
    return t.mean;
  }
  function diverging(t) {  // t in [-1, 1]: blue, white, red
    t = Math.max(-1, Math.min(1, isFinite(t) ? t : 0));
    var a = t < 0 ? [33, 102, 172] : [178, 24, 43], f = Math.abs(t);
    return "rgb(" + [0, 1, 2].map(function (c) { return Math.round(247 + f * (a[c] - 247)); }).join(",") + ")";
  }
  function colourControl(fig, g, pts, rows, own) {
    var traceOf = {};
    g.traces.forEach(function (t) { traceOf[t.model] = t; });
    var ms = Object.keys(traceOf).map(Number);
    if (ms.length < 2 && !D.rows) return;
    var label = h("label", {class: "map-colour"}, "colour: ");
    var sel = h("select", {"aria-label": "colour the sample map by"});
    ms.forEach(function (m) { sel.appendChild(h("option", {value: "m:" + m}, "orbit mean of " + D.models[m].name)); });
    ms.forEach(function (a) {
      ms.forEach(function (b) { if (a < b) sel.appendChild(h("option", {value: "d:" + a + ":" + b}, D.models[a].name + " − " + D.models[b].name)); });
    });
    sel.value = "m:" + own;
    var legend = h("span", {class: "map-legend muted"});
    label.appendChild(sel);
    label.appendChild(legend);
    fig.insertBefore(label, fig.querySelector("figcaption"));
    var vmax = 1e-9;
    ms.forEach(function (m) { Array.prototype.forEach.call(means(g, traceOf[m]), function (v) { if (isFinite(v)) vmax = Math.max(vmax, v); }); });
    function paint() {
      var parts = sel.value.split(":").map(Number), diff = sel.value[0] === "d", vals = [], span = 1e-9;
      var A = means(g, traceOf[parts[1]]), B = diff ? means(g, traceOf[parts[2]]) : null;
      rows.forEach(function (r) {
        var i = position(r), v = i < 0 ? NaN : diff ? A[i] - B[i] : A[i];
        vals.push(v);
        if (isFinite(v)) span = Math.max(span, Math.abs(v));
      });
      Array.prototype.forEach.call(pts, function (p, n) {
        var v = vals[n];
        p.style.fill = !isFinite(v) ? "#bbb" : diff ? diverging(v / span) : colour(v / vmax);
        p.setAttribute("data-value", isFinite(v) ? v : "");
      });
      legend.textContent = diff ? " red: " + D.models[parts[1]].name + " higher, blue: " + D.models[parts[2]].name + " higher (±" + fmt(span) + ")"
                                : " 0 … " + fmt(vmax) + " (" + g.metric + ")";
    }
    sel.addEventListener("change", paint);
    if (D.rows) paint();  // a subset embedded: grey out the points that open nothing
  }

  /* roving focus: one tab stop per map; the arrow keys move to the nearest point that way, Enter or Space opens it */
  function roving(fig, pts) {
    var live = Array.prototype.filter.call(pts, function (p) { return p.hasAttribute("data-sample"); });
    if (!live.length) return;
    var xy = live.map(function (p) { return [Number(p.getAttribute("x")), Number(p.getAttribute("y"))]; });
    live.forEach(function (p, n) { p.setAttribute("tabindex", n === 0 ? "0" : "-1"); });
    function go(from, to) {
      live[from].setAttribute("tabindex", "-1");
      live[to].setAttribute("tabindex", "0");
      live[to].focus();
    }
    fig.addEventListener("keydown", function (ev) {
      var from = live.indexOf(ev.target);
      var dir = {ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowDown: [0, 1], ArrowUp: [0, -1]}[ev.key];
      if (from < 0 || (!dir && ev.key !== "Home" && ev.key !== "End")) return;
      ev.preventDefault();
      if (!dir) { go(from, ev.key === "Home" ? 0 : live.length - 1); return; }
      var best = -1, score = Infinity;
      xy.forEach(function (q, n) {
        var dx = q[0] - xy[from][0], dy = q[1] - xy[from][1], along = dx * dir[0] + dy * dir[1];
        if (n === from || along <= 0) return;
        var sc = along + 2 * Math.abs(dx * dir[1] - dy * dir[0]);
        if (sc < score) { score = sc; best = n; }
      });
      if (best >= 0) go(from, best);
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("figure.mapbox[data-rows]"), function (fig) {
    var rows = fig.getAttribute("data-rows").split(" ").map(Number);
    var pts = fig.querySelectorAll('g[id$="-samples"] use');
    if (pts.length !== rows.length) return;  // a map drawn otherwise: its points stay plain
    Array.prototype.forEach.call(pts, function (p, n) {
      if (position(rows[n]) < 0) return;
      p.setAttribute("role", "button");
      p.setAttribute("aria-label", "show sample " + rows[n]);
      p.setAttribute("data-sample", rows[n]);
      p.setAttribute("class", "pick");
    });
    roving(fig, pts);
    var g = D.groups.filter(function (x) { return String(x.index) === fig.getAttribute("data-group"); })[0];
    var block = fig.closest("[data-model]");
    if (g && block) colourControl(fig, g, pts, rows, Number(block.getAttribute("data-model")));
    function pick(ev) {
      var t = ev.target.closest && ev.target.closest("[data-sample]");
      if (!t || (ev.type === "keydown" && ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      show(t.getAttribute("data-sample"), fig.getAttribute("data-group"));
    }
    fig.addEventListener("click", pick);
    fig.addEventListener("keydown", pick);
  });
})();
