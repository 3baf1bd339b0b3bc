// sprofd's page script: the timeline (CPU or memory), the inline flamegraph (search, zoom,
// comparison) and the process table's memory sparklines, grouping, sorting and filter. Everything it shows comes from the
// daemon's API; everything it is showing is in the URL, so Back and links work.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  document.body.classList.add('scripted');

  // ---- state in the URL -------------------------------------------------------------
  function readState() {
    var s = {};
    new URLSearchParams(location.search).forEach(function (v, k) { s[k] = v; });
    return s;
  }
  function urlOf(s) {
    var u = new URLSearchParams();
    Object.keys(s).sort().forEach(function (k) {
      if (s[k] !== undefined && s[k] !== null && s[k] !== '') u.set(k, s[k]);
    });
    var q = u.toString();
    return location.pathname + (q ? '?' + q : '');
  }
  // Changes the state: a new history entry (Back undoes it), or in place with `replace`.
  function go(changes, replace) {
    var url = urlOf(Object.assign(readState(), changes));
    if (url === location.pathname + location.search) return;
    history[replace ? 'replaceState' : 'pushState'](null, '', url);
    apply();
  }
  window.addEventListener('popstate', function () { apply(); });

  // The range in unix seconds: the URL's if absolute, else what the server resolved.
  var loaded = { from: Math.floor(+document.body.dataset.from / 1000), to: Math.ceil(+document.body.dataset.to / 1000) };
  function range(s) {
    var num = function (v) { return /^\d+$/.test(v || '') ? +v : null; };
    var f = num(s.from), t = num(s.to);
    return { from: f !== null ? f : loaded.from, to: t !== null ? t : loaded.to };
  }
  function qs(o) {
    var u = new URLSearchParams();
    Object.keys(o).forEach(function (k) { if (o[k] !== undefined && o[k] !== '') u.set(k, o[k]); });
    return u.toString();
  }
  function fetchText(url) {
    return fetch(url).then(function (r) {
      return r.text().then(function (t) {
        if (!r.ok) throw new Error(t.replace(/^error: /, '').trim() || r.statusText);
        return t;
      });
    });
  }
  function utc(secs) { return new Date(secs * 1000).toISOString().replace('T', ' ').slice(0, 19); }
  function hash(s) { var h = 0; for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return Math.abs(h); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  var SVG = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  // ---- the process table --------------------------------------------------------------
  var procs = [];
  function readRows() {
    procs = [];
    document.querySelectorAll('#processes tr.process').forEach(function (tr) {
      var cmd = tr.querySelector('td.cmd');
      procs.push({ pid: +tr.dataset.pid, comm: tr.dataset.comm, cpu_seconds: +tr.dataset.cpu, cmdline: cmd ? cmd.title : '', mem: +(tr.dataset.mem || 0) });
    });
  }
  function loadProcesses(r) {
    return fetchText('/api/v1/processes?' + qs({ from: r.from, to: r.to })).then(function (t) {
      procs = JSON.parse(t);
      var total = procs.reduce(function (a, p) { return a + p.cpu_seconds; }, 0);
      $('range').firstChild.textContent = utc(r.from) + ' to ' + utc(r.to) + ' (UTC): ' + procs.length +
        ' processes, ' + total.toFixed(2) + ' CPU seconds. ';
      $('host').href = '/api/v1/profile?' + qs({ from: r.from, to: r.to, format: 'svg' });
      var form = $('rangeform');
      form.elements.from.value = r.from; form.elements.to.value = r.to;
    });
  }
  function profileLinks(td, r, p) {
    [['svg', 'flamegraph'], ['txt', 'table'], ['pprof', 'pprof'], ['heatmap', 'heatmap']].forEach(function (f, i) {
      if (i) td.appendChild(document.createTextNode(' · '));
      var a = el('a', { href: '/api/v1/profile?' + qs({ from: r.from, to: r.to, pid: p.pid, format: f[0] }) }, f[1]);
      if (i === 0) a.className = 'flame';
      if (f[0] === 'heatmap') a.className = 'heatmap';
      td.appendChild(a);
    });
  }
  // ---- memory ---------------------------------------------------------------------------
  function mib(b) { return b >= 1073741824 ? (b / 1073741824).toFixed(2) + ' GiB' : (b / 1048576).toFixed(1) + ' MiB'; }
  function rssTotal(p) { return p.anon + p.file + p.shmem; }
  // A process's peak resident bytes: from its series, else from the server's row.
  function memPeak(p) { return p.rss ? rssTotal(p.rss.peak) : (p.mem || 0); }
  function memLatest(p) { return p.rss ? rssTotal(p.rss.latest) : 0; }
  // Resident memory over the range: a sparkline scaled to the process's own peak.
  function sparkline(m, r) {
    var W = 80, H = 18, peak = Math.max(1, rssTotal(m.peak)), span = Math.max(1, (r.to - r.from) * 1000);
    var pts = m.times.map(function (t, i) {
      var v = m.anon[i] + m.file[i] + m.shmem[i];
      var x = Math.max(0, Math.min(W, (t - r.from * 1000) / span * W));
      return [x, H - 1 - v / peak * (H - 2)];
    });
    if (pts.length === 1) pts.push([Math.min(W, pts[0][0] + 2), pts[0][1]]);
    var svg = svgEl('svg', { width: W, height: H, 'class': 'spark' });
    svg.appendChild(svgEl('polyline', { points: pts.map(function (p) { return p[0].toFixed(1) + ',' + p[1].toFixed(1); }).join(' ') }));
    return svg;
  }
  function memoryCell(p, r) {
    var td = el('td', { 'class': 'num mem' });
    var m = p.rss;
    if (!m) { if (p.mem) td.textContent = 'peak ' + mib(p.mem); return td; }
    if (m.times.length) td.appendChild(sparkline(m, r));
    td.appendChild(document.createTextNode(' ' + mib(rssTotal(m.latest))));
    td.title = 'peak ' + mib(rssTotal(m.peak)) + ' at ' + utc(m.peak.t_ms / 1000) + ' · latest ' + mib(rssTotal(m.latest)) +
      ' (anon ' + mib(m.latest.anon) + ', file ' + mib(m.latest.file) + ', shmem ' + mib(m.latest.shmem) + ')';
    return td;
  }
  // The Python views besides the default (python), as the view= parameter names them.
  var VIEWS = { mixed: true, native: true };
  function processRow(p, total, r, s) {
    var tr = el('tr', { 'class': 'process', 'data-pid': p.pid, 'data-comm': p.comm, 'data-cpu': p.cpu_seconds });
    if (String(p.pid) === s.pid) tr.classList.add('selected');
    var cmd = p.cmdline || p.comm;
    tr.appendChild(el('td', { 'class': 'num' }, (total > 0 ? 100 * p.cpu_seconds / total : 0).toFixed(1) + '%'));
    tr.appendChild(el('td', { 'class': 'num' }, p.cpu_seconds.toFixed(2)));
    tr.appendChild(memoryCell(p, r));
    tr.appendChild(el('td', { 'class': 'num' }, String(p.pid)));
    tr.appendChild(el('td', {}, p.comm));
    tr.appendChild(el('td', { 'class': 'cmd', title: cmd }, cmd.slice(0, 100)));
    var td = el('td'); profileLinks(td, r, p); tr.appendChild(td);
    return tr;
  }
  var SORTS = {
    cpu: function (a, b) { return b.cpu_seconds - a.cpu_seconds || a.pid - b.pid; },
    pid: function (a, b) { return a.pid - b.pid; },
    mem: function (a, b) { return memPeak(b) - memPeak(a) || a.pid - b.pid; },
    comm: function (a, b) { return a.comm.localeCompare(b.comm) || b.cpu_seconds - a.cpu_seconds; },
    cmd: function (a, b) { return (a.cmdline || a.comm).localeCompare(b.cmdline || b.comm) || a.pid - b.pid; }
  };
  var open = {};
  function renderTable(s) {
    var r = range(s), sort = SORTS[s.sort] ? s.sort : 'cpu';
    var needle = (s.filter || '').toLowerCase();
    var total = procs.reduce(function (a, p) { return a + p.cpu_seconds; }, 0);
    var list = procs.filter(function (p) {
      return !needle || (p.comm + ' ' + p.pid + ' ' + (p.cmdline || '')).toLowerCase().indexOf(needle) >= 0;
    }).sort(SORTS[sort]);
    document.querySelectorAll('#processes th[data-sort]').forEach(function (th) {
      th.classList.toggle('sorted', th.dataset.sort === sort && th.textContent !== 'seconds');
    });
    var body = document.querySelector('#processes tbody');
    body.textContent = '';
    if (!list.length) {
      body.appendChild(el('tr', { 'class': 'none' })).appendChild(el('td', { colspan: 7, 'class': 'empty' },
        procs.length ? 'No process matches the filter.' : 'No samples in this range (the daemon may have started after it, or nothing ran).'));
      return;
    }
    if (s.group !== '1') {
      list.slice(0, 500).forEach(function (p) { body.appendChild(processRow(p, total, r, s)); });
      return;
    }
    var groups = {}, order = [];
    list.forEach(function (p) {
      if (!groups[p.comm]) { groups[p.comm] = { comm: p.comm, cpu_seconds: 0, members: [], pid: 0, cmdline: '', mem: 0, latest: 0 }; order.push(groups[p.comm]); }
      groups[p.comm].cpu_seconds += p.cpu_seconds; groups[p.comm].members.push(p);
      groups[p.comm].mem += memPeak(p); groups[p.comm].latest += memLatest(p);
      groups[p.comm].pid = groups[p.comm].pid || p.pid;
    });
    order.sort(SORTS[sort]);
    order.slice(0, 300).forEach(function (g) {
      var tr = el('tr', { 'class': 'group', 'data-comm': g.comm });
      if (open[g.comm]) tr.classList.add('open');
      if (s.comm === commRegex(g.comm)) tr.classList.add('selected');
      tr.appendChild(el('td', { 'class': 'num' }, (total > 0 ? 100 * g.cpu_seconds / total : 0).toFixed(1) + '%'));
      tr.appendChild(el('td', { 'class': 'num' }, g.cpu_seconds.toFixed(2)));
      tr.appendChild(el('td', { 'class': 'num mem', title: 'the processes\' latest sizes, summed' }, g.latest ? mib(g.latest) : ''));
      tr.appendChild(el('td', { 'class': 'num count' }, g.members.length + (g.members.length === 1 ? ' process' : ' processes')));
      tr.appendChild(el('td', {}, g.comm));
      tr.appendChild(el('td', { 'class': 'cmd' }, ''));
      tr.appendChild(el('td', {}, ''));
      body.appendChild(tr);
      if (open[g.comm]) g.members.forEach(function (p) { body.appendChild(processRow(p, total, r, s)); });
    });
  }
  function commRegex(name) { return '^' + name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '$'; }
  $('processes').addEventListener('click', function (e) {
    if (e.target.closest('a')) return;
    var th = e.target.closest('th[data-sort]');
    if (th) { go({ sort: th.dataset.sort === 'cpu' ? '' : th.dataset.sort }, true); return; }
    var g = e.target.closest('tr.group');
    if (g) {
      open[g.dataset.comm] = !open[g.dataset.comm];
      go({ comm: commRegex(g.dataset.comm), pid: '', zoom: '' });
      renderTable(readState());
      return;
    }
    var tr = e.target.closest('tr.process');
    if (tr) go({ pid: tr.dataset.pid, comm: '', zoom: '' });
  });
  $('filter').addEventListener('input', function () { go({ filter: this.value }, true); });
  $('group').addEventListener('change', function () { go({ group: this.checked ? '1' : '' }); });

  // ---- the timeline -------------------------------------------------------------------
  var tl = null;
  function loadTimeline(s, tries) {
    var r = range(s);
    var metric = s.metric === 'memory' ? 'memory' : '';
    timelineReady = fetchText('/api/v1/timeline?' + qs({ from: r.from, to: r.to, by: s.by === 'comm' ? 'comm' : '', metric: metric })).then(function (t) {
      tl = JSON.parse(t);
      drawTimeline();
      // Windows not summarized yet (a cold cache over a long range): ask again for the rest.
      if (tl.missing_windows > 0 && (tries || 0) < 20) setTimeout(function () { if (key.timeline === timelineKey(s)) loadTimeline(s, (tries || 0) + 1); }, 300);
    }).catch(function (e) { $('timeline').textContent = 'Timeline: ' + e.message; });
    return timelineReady;
  }
  var timelineReady = Promise.resolve();
  function color(key, i) { return key === 'other' ? '#bbb' : 'hsl(' + ((hash(key) % 360 + i * 47) % 360) + ',60%,58%)'; }
  function drawTimeline() {
    var box = $('timeline'), W = box.clientWidth || 800, H = box.clientHeight || 180, pad = 16;
    box.textContent = '';
    var svg = svgEl('svg', { width: W, height: H, id: 'timeline-svg' });
    box.appendChild(svg);
    var memory = tl.metric === 'memory';
    var max = Math.max.apply(null, tl.total.concat([memory ? 1048576 : 0.05]));
    var span = tl.to_ms - tl.from_ms;
    var x = function (ms) { return (ms - tl.from_ms) / span * W; };
    var y = function (v) { return H - pad - v / max * (H - 2 * pad); };
    var base = tl.times.map(function () { return 0; });
    tl.series.forEach(function (se, i) {
      var top = [], bottom = [];
      tl.times.forEach(function (t, j) {
        var x0 = x(t), x1 = x(Math.min(t + tl.step_ms, tl.to_ms)), y0 = base[j], y1 = y0 + se.values[j];
        top.push(x0.toFixed(1) + ',' + y(y1).toFixed(1), x1.toFixed(1) + ',' + y(y1).toFixed(1));
        bottom.unshift(x1.toFixed(1) + ',' + y(y0).toFixed(1), x0.toFixed(1) + ',' + y(y0).toFixed(1));
        base[j] = y1;
      });
      var p = svgEl('polygon', { 'class': 'series', 'data-key': se.key, points: top.concat(bottom).join(' '), fill: color(se.key, i) });
      var title = svgEl('title');
      title.textContent = label(se) + ': ' + (memory ? 'peak ' + mib(se.peak_bytes || 0) : se.cpu_seconds.toFixed(2) + ' CPU s');
      p.appendChild(title);
      svg.appendChild(p);
    });
    var text = function (x0, y0, s, anchor) {
      var t = svgEl('text', { x: x0, y: y0, 'class': 'axis', 'text-anchor': anchor || 'start' });
      t.textContent = s; svg.appendChild(t);
    };
    text(4, 12, memory ? mib(max) : max.toFixed(max < 1 ? 2 : 1) + ' CPUs');
    text(4, H - 3, utc(tl.from_ms / 1000));
    text(W - 4, H - 3, utc(tl.to_ms / 1000), 'end');
    // Times of day between the ends, on round steps.
    var TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    var tick = TICKS.filter(function (t) { return span / (t * 1000) <= 8; })[0] || 86400;
    for (var t = Math.ceil(tl.from_ms / 1000 / tick) * tick; t * 1000 < tl.to_ms; t += tick) {
      var px = x(t * 1000);
      if (px < 150 || px > W - 150) continue;
      svg.appendChild(svgEl('line', { x1: px, x2: px, y1: H - pad, y2: H - pad + 3, stroke: '#999' }));
      text(px, H - 3, utc(t).slice(11, tick < 60 ? 19 : 16), 'middle');
    }
    if (!tl.series.length) text(W / 2, H / 2, memory ? 'No memory readings in this range.' : 'No samples in this range.', 'middle');
    svg.appendChild(svgEl('line', { 'class': 'cursor', x1: -1, x2: -1, y1: 0, y2: H, id: 'tl-cursor' }));
    svg.appendChild(svgEl('rect', { 'class': 'brush', x: 0, y: 0, width: 0, height: H, id: 'tl-brush', visibility: 'hidden' }));
  }
  function label(se) { return se.pid ? se.comm + ' (' + se.pid + ')' : se.key === 'other' ? se.comm : se.comm + ' (' + se.processes + ')'; }
  var drag = null;
  function msAt(e) {
    var box = $('timeline').getBoundingClientRect();
    var fx = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    return { px: fx * box.width, ms: tl.from_ms + fx * (tl.to_ms - tl.from_ms) };
  }
  $('timeline').addEventListener('mousedown', function (e) {
    if (!tl || e.button !== 0) return;
    drag = msAt(e); e.preventDefault();
  });
  window.addEventListener('mousemove', function (e) {
    if (!tl) return;
    var at = msAt(e), inside = e.target.closest && e.target.closest('#timeline');
    if (drag) {
      var b = $('tl-brush');
      b.setAttribute('visibility', 'visible');
      b.setAttribute('x', Math.min(drag.px, at.px)); b.setAttribute('width', Math.abs(at.px - drag.px));
    }
    if (!inside && !drag) return;
    var c = $('tl-cursor'); c.setAttribute('x1', at.px); c.setAttribute('x2', at.px);
    var j = Math.min(tl.times.length - 1, Math.floor((at.ms - tl.from_ms) / tl.step_ms));
    if (j < 0) return;
    var fmt = tl.metric === 'memory' ? mib : function (v) { return v.toFixed(2); };
    var parts = tl.series.filter(function (se) { return se.values[j] > 0; }).slice(0, 6).map(function (se) { return label(se) + ' ' + fmt(se.values[j]); });
    $('hover').textContent = utc(tl.times[j] / 1000) + ': ' + fmt(tl.total[j]) + (tl.metric === 'memory' ? ' resident' : ' CPUs') + (parts.length ? ' · ' + parts.join(' · ') : '');
  });
  window.addEventListener('mouseup', function (e) {
    if (!drag) return;
    var start = drag, end = msAt(e);
    drag = null;
    $('tl-brush').setAttribute('visibility', 'hidden');
    if (Math.abs(end.px - start.px) < 4) return;
    var a = Math.floor(Math.min(start.ms, end.ms) / 1000), b = Math.ceil(Math.max(start.ms, end.ms) / 1000);
    go({ from: String(a), to: String(b), zoom: '' });
  });
  document.querySelectorAll('input[name=by]').forEach(function (i) {
    i.addEventListener('change', function () { go({ by: this.value === 'comm' ? 'comm' : '' }); });
  });
  document.querySelectorAll('input[name=metric]').forEach(function (i) {
    i.addEventListener('change', function () { go({ metric: this.value === 'memory' ? 'memory' : '' }); });
  });
  window.addEventListener('resize', function () { if (tl) drawTimeline(); });

  // ---- the flamegraph -----------------------------------------------------------------
  var flame = null;
  function selectionParams(s) {
    var r = range(s), p = { from: r.from, to: r.to, view: VIEWS[s.view] ? s.view : '' };
    if (s.pid) p.pid = s.pid; else if (s.comm) p.comm = s.comm;
    return p;
  }
  function compareParams(s) {
    var p = selectionParams(s);
    if (s.compare === 'range' && s.base_from && s.base_to) { p.base_from = s.base_from; p.base_to = s.base_to; }
    return p;
  }
  function parseFolded(text, diff) {
    var root = { name: 'all', v: 0, b: 0, kids: {}, order: [] }, stacks = [];
    text.split('\n').forEach(function (line) {
      if (!line) return;
      var parts = line.split(' '), after, before = 0;
      if (diff) { after = +parts.pop(); before = +parts.pop(); } else after = +parts.pop();
      var frames = parts.join(' ').split(';');
      stacks.push({ frames: frames, v: after });
      var n = root; n.v += after; n.b += before;
      frames.forEach(function (f) {
        var k = n.kids[f];
        if (!k) { k = n.kids[f] = { name: f, v: 0, b: 0, kids: {}, order: [], parent: n }; n.order.push(k); }
        k.v += after; k.b += before; n = k;
      });
    });
    return { root: root, stacks: stacks, diff: diff, total: root.v, before: root.b };
  }
  function loadFlame(s) {
    var diff = s.compare === 'before' || (s.compare === 'range' && s.base_from && s.base_to);
    var url = diff ? '/api/v1/diff?' + qs(Object.assign(compareParams(s), { format: 'folded' }))
      : '/api/v1/profile?' + qs(Object.assign(selectionParams(s), { format: 'folded' }));
    $('flamegraph').textContent = '';
    $('flamegraph').appendChild(el('div', { 'class': 'note' }, 'Loading…'));
    var want = key.flame;
    // A range holding more windows than a profile query reads is refused: say so instead.
    var tooLong = function (t) {
      return t && t.window_bytes > t.max_profile_bytes && t.from_ms <= range(s).from * 1000 + t.step_ms && t.to_ms >= range(s).to * 1000;
    };
    if (tooLong(tl)) {
      flame = null;
      $('flamegraph').textContent = '';
      $('flamegraph').appendChild(el('div', { 'class': 'note' }, 'This range holds ' + Math.round(tl.window_bytes / 1048576) +
        ' MiB of stored windows, more than one flamegraph reads (' + Math.round(tl.max_profile_bytes / 1048576) +
        ' MiB): drag over the timeline to choose a shorter range.'));
      subtitle(s, null);
      drawChanges();
      return Promise.resolve();
    }
    var changes = diff ? fetchText('/api/v1/diff?' + qs(Object.assign(compareParams(s), { format: 'json' }))) : Promise.resolve(null);
    return Promise.all([fetchText(url), changes]).then(function (got) {
      if (want !== key.flame) return;
      flame = parseFolded(got[0], diff);
      flame.changes = got[1] ? JSON.parse(got[1]) : null;
      drawFlame(readState());
      drawChanges();
    }).catch(function (e) {
      if (want !== key.flame) return;
      flame = null;
      $('flamegraph').textContent = '';
      $('flamegraph').appendChild(el('div', { 'class': 'note' }, 'Could not load the profile: ' + e.message));
    });
  }
  function findZoom(path) {
    var n = flame.root;
    if (!path) return n;
    var parts = path.split(';');
    for (var i = 0; i < parts.length; i++) { n = n.kids[parts[i]]; if (!n) return flame.root; }
    return n;
  }
  function pathOf(n) { var p = []; for (; n && n.parent; n = n.parent) p.unshift(n.name); return p.join(';'); }
  function searchRegex(q) {
    if (!q) return null;
    try { return new RegExp(q, 'i'); } catch (e) { return new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i'); }
  }
  function frameColor(n, re) {
    if (!flame.diff) return 'hsl(' + (10 + hash(n.name) % 45) + ',75%,' + (58 + hash(n.name + 'l') % 12) + '%)';
    var d = n.v - n.b, m = Math.max(n.v, n.b, 1), k = Math.round(Math.min(1, Math.abs(d) / m) * 190);
    return d > 0 ? 'rgb(255,' + (255 - k) + ',' + (255 - k) + ')' : d < 0 ? 'rgb(' + (255 - k) + ',' + (255 - k) + ',255)' : '#eee';
  }
  var ROW = 17;
  function drawFlame(s) {
    var box = $('flamegraph');
    box.textContent = '';
    if (!flame || !flame.total) {
      box.appendChild(el('div', { 'class': 'note' }, flame ? 'No samples for this selection in this range.' : ''));
      subtitle(s, null);
      return;
    }
    var W = box.clientWidth || 1000, zoom = findZoom(s.zoom), re = searchRegex(s.q), drawn = 0, depthMax = 0;
    var frag = document.createDocumentFragment();
    function put(n, depth, x, w, dim) {
      if (w < 1 || drawn > 6000) return;
      drawn++;
      depthMax = Math.max(depthMax, depth);
      var d = el('div', { 'class': 'f', title: tip(n) }, w > 30 ? n.name : '');
      d.style.left = x + 'px'; d.style.top = depth * ROW + 'px'; d.style.width = w + 'px';
      d.style.background = frameColor(n, re);
      if (dim) d.style.opacity = 0.6;
      if (re && re.test(n.name)) d.classList.add('match');
      d.dataset.path = pathOf(n);
      d.dataset.name = n.name;
      frag.appendChild(d);
    }
    var chain = [];
    for (var a = zoom; a; a = a.parent) chain.unshift(a);
    chain.forEach(function (n, i) { put(n, i, 0, W, n !== zoom); });
    (function walk(n, depth, x, w) {
      var cx = x;
      n.order.slice().sort(function (p, q) { return p.name < q.name ? -1 : p.name > q.name ? 1 : 0; }).forEach(function (k) {
        var kw = w * k.v / n.v;
        if (kw >= 1) { put(k, depth, cx, kw); walk(k, depth + 1, cx, kw); }
        cx += kw;
      });
    })(zoom, chain.length, 0, W);
    box.style.height = (depthMax + 1) * ROW + 4 + 'px';
    box.appendChild(frag);
    subtitle(s, re);
  }
  function tip(n) {
    var pct = 100 * n.v / flame.total;
    var t = n.name + '\n' + n.v + ' samples (' + pct.toFixed(2) + '%)';
    if (flame.diff) t += '\nbefore ' + n.b + ' (scaled) · ' + (n.v >= n.b ? '+' : '') + (100 * (n.v - n.b) / flame.total).toFixed(2) + ' points';
    return t;
  }
  $('flamegraph').addEventListener('click', function (e) {
    var f = e.target.closest('.f');
    if (f) go({ zoom: f.dataset.path });
  });
  function subtitle(s, re) {
    var parts = [];
    if (flame && flame.total) {
      var truncated = 0, matched = 0;
      flame.stacks.forEach(function (st) {
        if (st.frames.indexOf('[truncated]') >= 0) truncated += st.v;
        if (re && st.frames.some(function (f) { return re.test(f); })) matched += st.v;
      });
      if (flame.diff) {
        parts.push('after ' + flame.total + ' samples', 'before ' + (flame.changes ? flame.changes.before_samples : '?') + ' samples (scaled to the after total)', 'red grew, blue shrank');
      } else {
        parts.push(flame.total + ' samples');
        var cpu = selectedCpu(s), hostCpu = procs.reduce(function (a, p) { return a + p.cpu_seconds; }, 0);
        if (cpu !== null) parts.push(cpu.toFixed(2) + ' CPU s' + (hostCpu > 0 && (s.pid || s.comm) ? ' (' + (100 * cpu / hostCpu).toFixed(1) + '% of the range\'s)' : ''));
      }
      if (truncated) parts.push(truncated + ' truncated stacks (' + (100 * truncated / flame.total).toFixed(1) + '%)');
      $('matched').textContent = re ? 'Matched: ' + (100 * matched / flame.total).toFixed(1) + '%' : '';
    } else {
      $('matched').textContent = '';
    }
    $('subtitle').textContent = parts.join(' · ');
  }
  function selectedCpu(s) {
    var re = s.comm ? searchRegex(s.comm) : null;
    var list = procs.filter(function (p) { return s.pid ? String(p.pid) === s.pid : !re || re.test(p.comm); });
    return list.reduce(function (a, p) { return a + p.cpu_seconds; }, 0);
  }
  function drawChanges() {
    var t = $('changes'), body = t.querySelector('tbody');
    body.textContent = '';
    t.hidden = !(flame && flame.changes);
    if (t.hidden) return;
    flame.changes.changes.slice(0, 20).forEach(function (c) {
      var tr = el('tr', { 'class': 'change' });
      tr.appendChild(el('td', { 'class': 'num' }, c.before_pct.toFixed(2)));
      tr.appendChild(el('td', { 'class': 'num' }, c.after_pct.toFixed(2)));
      tr.appendChild(el('td', { 'class': 'num ' + (c.delta > 0 ? 'up' : c.delta < 0 ? 'down' : '') }, (c.delta > 0 ? '+' : '') + c.delta.toFixed(2)));
      tr.appendChild(el('td', { 'class': 'fn' }, c.name));
      body.appendChild(tr);
    });
  }
  $('search').addEventListener('input', function () { go({ q: this.value }, true); });
  $('view').addEventListener('change', function () { go({ view: VIEWS[this.value] ? this.value : '' }); });
  $('compare').addEventListener('change', function () {
    $('base-range').hidden = this.value !== 'range';
    if (this.value !== 'range') go({ compare: this.value, base_from: '', base_to: '' });
  });
  $('base-go').addEventListener('click', function () {
    go({ compare: 'range', base_from: $('base_from').value, base_to: $('base_to').value });
  });
  $('show-host').addEventListener('click', function (e) { e.preventDefault(); go({ pid: '', comm: '', zoom: '' }); });

  // ---- applying the state ---------------------------------------------------------------
  var key = {};
  function timelineKey(s) { var r = range(s); return [r.from, r.to, s.by, s.metric].join('|'); }
  function apply() {
    var s = readState(), r = range(s);
    // The controls show the state (after Back, too).
    $('search').value = s.q || ''; $('view').value = VIEWS[s.view] ? s.view : 'python';
    $('compare').value = s.compare || ''; $('base-range').hidden = s.compare !== 'range';
    $('base_from').value = s.base_from || ''; $('base_to').value = s.base_to || '';
    $('filter').value = s.filter || ''; $('group').checked = s.group === '1';
    document.querySelectorAll('input[name=by]').forEach(function (i) { i.checked = i.value === (s.by === 'comm' ? 'comm' : 'process'); });
    var memory = s.metric === 'memory';
    document.querySelectorAll('input[name=metric]').forEach(function (i) { i.checked = i.value === (memory ? 'memory' : 'cpu'); });
    $('tl-title').textContent = memory ? 'Memory over time' : 'CPU over time';
    $('tl-unit').textContent = memory ? 'resident bytes' : 'CPUs busy';
    var sel = s.pid ? 'pid ' + s.pid + (procs.some(function (p) { return String(p.pid) === s.pid; })
      ? ' (' + procs.filter(function (p) { return String(p.pid) === s.pid; })[0].comm + ')' : '')
      : s.comm ? 'command /' + s.comm + '/' : 'Whole host';
    $('selection').textContent = sel + (s.compare ? ', compared' : '');
    var tk = timelineKey(s);
    var rangeKey = r.from + '|' + r.to;
    var tableDone = Promise.resolve();
    if (key.range !== rangeKey) {
      // The server's rows have no memory series: their sparklines come from the API.
      var series = key.range === undefined && document.querySelector('#processes tr.process[data-mem]');
      if (key.range !== undefined || series) tableDone = loadProcesses(r).catch(function () {});
      key.range = rangeKey;
    }
    if (key.timeline !== tk) { key.timeline = tk; loadTimeline(s); }
    var fk = JSON.stringify([compareParams(s), s.compare || '']);
    Promise.all([tableDone, timelineReady.catch(function () {})]).then(function () {
      renderTable(s);
      if (key.flame !== fk) { key.flame = fk; loadFlame(s); } else drawFlame(s);
      if (flame) drawChanges();
    });
  }
  readRows();
  // After the first paint: the server's table is on screen meanwhile.
  setTimeout(apply, 0);
})();
