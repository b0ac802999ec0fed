// keygate "API keys" page: plain JS over the admin JSON API (see the README). The admin token
// lives in sessionStorage only; key secrets are never stored and leave the DOM on Close.
'use strict';
(function () {
  var TOKEN = 'keygate.token';
  var INSTANCE = 'keygate.instance';
  var PAGE = 100;

  function $(id) { return document.getElementById(id); }
  // A key's prefix as the page shows it, "sk_live_abc123…" (apikey.Mask in Go).
  function mask(prefix) { return prefix + '…'; }

  var state = {
    me: null, instances: [], instance: '', keys: [], cursors: [], hasMore: false,
    loadSeq: 0, revoking: null, opener: null,
    // The rows' usage: per key id, {pending} while queued or loading, then the answer or
    // {error}; usageGen discards answers to a list that is no longer shown.
    usage: {}, usageQueue: [], usageActive: 0, usageGen: 0,
    // The usage dialog: its key, range, and the number of its latest request.
    usageKey: null, usageRange: 'day', usageSeq: 0
  };

  // ---- API ----

  function ApiError(status, code, message) {
    this.status = status; this.code = code; this.message = message;
  }

  async function api(method, path, body) {
    var token = sessionStorage.getItem(TOKEN);
    if (!token) {
      promptSignIn('');
      var e0 = new ApiError(401, 'signed_out', 'Signed out.');
      e0.handled = true;
      throw e0;
    }
    var init = {
      method: method, cache: 'no-store', credentials: 'omit',
      headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' }
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    var res;
    try {
      res = await fetch('v1/' + path, init);
    } catch (err) {
      throw new ApiError(0, 'network_error', 'Could not reach the admin API (' + (err && err.message || err) +
        '). Check that keygate is running, then try again.');
    }
    var data = null;
    try { data = await res.json(); } catch (err) { data = null; }
    if (!res.ok) {
      var d = data && data.error;
      var e = new ApiError(res.status, (d && d.code) || 'http_' + res.status,
        (d && d.message) || 'The admin API answered HTTP ' + res.status + '.');
      if (res.status === 401) {
        promptSignIn(e.message);
        e.handled = true;
      }
      throw e;
    }
    if (data === null) throw new ApiError(res.status, 'bad_response', 'The admin API sent an answer that is not JSON.');
    return data;
  }

  function can(perm) {
    return !!state.me && state.me.permissions.indexOf(perm) >= 0;
  }

  // ---- Formatting (UTC) ----

  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function ymd(d) { return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()); }
  function fmtTime(iso, dateOnlyAtMidnight) {
    var d = new Date(iso);
    if (isNaN(d)) return iso;
    var hm = pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes());
    if (dateOnlyAtMidnight && hm === '00:00' && d.getUTCSeconds() === 0) return ymd(d);
    return ymd(d) + ' ' + hm;
  }
  function tomorrowUTC() {
    var d = new Date();
    return ymd(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)));
  }

  // ---- Sign-in ----

  function closeDialogs(keepSecret) {
    var rd = $('revoke-dialog');
    if (rd.open) { state.revoking = null; rd.close(); }
    var cd = $('create-dialog');
    if (cd.open && !(keepSecret && $('secret'))) { resetCreate(); cd.close(); }
    var ud = $('usage-dialog');
    if (ud.open) { state.usageKey = null; state.usageSeq++; ud.close(); }
    state.opener = null;
  }

  // promptSignIn shows the token prompt, with the reason when there is one (the API's
  // message for a refused token).
  function promptSignIn(message, title) {
    sessionStorage.removeItem(TOKEN);
    state.me = null;
    state.loadSeq++;
    resetRowUsage();
    closeDialogs(true);
    $('app').hidden = true;
    $('picker').hidden = true;
    $('account').hidden = true;
    $('rows').replaceChildren();
    $('signin').hidden = false;
    $('signin-error-title').textContent = message ? (title || 'Token not accepted.') : '';
    $('signin-error-text').textContent = message || '';
    $('signin-error').hidden = !message;
    $('signin-submit').disabled = false;
    var input = $('token');
    input.value = '';
    if (message) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
    if (!$('create-dialog').open) input.focus();
  }

  async function loadSession() {
    var me, list;
    try {
      me = await api('GET', 'me');
      list = await api('GET', 'instances');
    } catch (e) {
      if (!e.handled) promptSignIn(e.message, 'Could not sign in.');
      return;
    }
    state.me = me;
    state.instances = list.data || [];
    showApp();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(INSTANCE);
    state.instance = '';
    promptSignIn('');
  }

  // ---- App ----

  function showApp() {
    $('signin').hidden = true;
    $('signin-error').hidden = true;
    $('app').hidden = false;
    $('account').hidden = false;
    $('picker').hidden = false;
    $('whoami').textContent = 'Signed in as ' + state.me.name;
    hideBanner();

    var sel = $('instance');
    var opts = [];
    var first = document.createElement('option');
    first.value = '';
    first.textContent = state.instances.length ? 'Select an instance…' : 'No instances';
    opts.push(first);
    state.instances.forEach(function (inst) {
      var o = document.createElement('option');
      o.value = inst.id;
      o.textContent = inst.name + ' · ' + inst.environment;
      opts.push(o);
    });
    sel.replaceChildren.apply(sel, opts);
    sel.disabled = state.instances.length === 0;

    var remembered = sessionStorage.getItem(INSTANCE);
    var ids = state.instances.map(function (i) { return i.id; });
    var pick = '';
    if (remembered && ids.indexOf(remembered) >= 0) pick = remembered;
    else if (ids.length === 1) pick = ids[0];
    sel.value = pick;
    selectInstance(pick);
  }

  function selectInstance(id) {
    state.instance = id;
    state.cursors = [];
    state.keys = [];
    state.loadSeq++;
    resetRowUsage();
    if (id) sessionStorage.setItem(INSTANCE, id); else sessionStorage.removeItem(INSTANCE);
    hideBanner();

    var read = can('apiKey.read');
    var create = can('apiKey.create');
    $('create').hidden = !create;
    $('create').disabled = !id;
    $('create').title = id ? '' : 'Pick an instance in the top bar first';
    $('locked').hidden = read;
    var none = $('no-instance');
    none.hidden = !!id || !(read || create);
    if (!state.instances.length) {
      none.firstElementChild.textContent = "This token can't see any instance. Ask an admin to give it access to one.";
    }
    $('list').hidden = !(read && id);
    $('rows').replaceChildren();
    $('empty').hidden = true;
    $('pager').hidden = true;
    if (read && id) loadKeys();
  }

  async function loadKeys() {
    var seq = ++state.loadSeq;
    var after = state.cursors[state.cursors.length - 1];
    var q = 'limit=' + PAGE + (after ? '&starting_after=' + encodeURIComponent(after) : '');
    var list = $('list');
    list.setAttribute('aria-busy', 'true');
    try {
      var page = await api('GET', 'instances/' + encodeURIComponent(state.instance) + '/keys?' + q);
      if (seq !== state.loadSeq) return;
      state.keys = page.data || [];
      state.hasMore = !!page.has_more;
      hideBanner();
      resetRowUsage();
      renderKeys();
    } catch (e) {
      if (seq !== state.loadSeq || e.handled) return;
      showBanner('Could not load the API keys: ' + e.message);
    } finally {
      if (seq === state.loadSeq) list.removeAttribute('aria-busy');
    }
  }

  function cell(cls, text) {
    var td = document.createElement('td');
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    return td;
  }

  function timeCell(iso, dateOnly) {
    if (!iso) return cell('date never', 'Never');
    var td = cell('date');
    var t = document.createElement('time');
    t.dateTime = iso;
    t.title = iso;
    t.textContent = fmtTime(iso, dateOnly);
    td.appendChild(t);
    return td;
  }

  function rowFor(k) {
    var tr = document.createElement('tr');
    tr.dataset.keyId = k.id;
    tr.dataset.status = k.status;
    var name = cell('name');
    name.tabIndex = -1;
    // The name opens the key's usage (a link, not a button: the row's only button revokes).
    var label = document.createElement('a');
    label.className = 'key-name';
    label.href = '#usage';
    label.setAttribute('aria-haspopup', 'dialog');
    label.title = 'Usage of ' + k.name;
    label.textContent = k.name;
    label.addEventListener('click', function (ev) {
      ev.preventDefault();
      openUsage(k, label);
    });
    name.appendChild(label);
    markRestrictions(tr, name, k);
    markLimits(tr, name, k);
    tr.appendChild(name);

    var keyCell = cell('key');
    var code = document.createElement('code');
    code.className = 'key-prefix';
    code.textContent = mask(k.prefix);
    keyCell.appendChild(code);
    tr.appendChild(keyCell);

    var st = cell('status');
    var badge = document.createElement('span');
    badge.className = 'badge badge-' + k.status;
    badge.textContent = k.status;
    st.appendChild(badge);
    tr.appendChild(st);

    tr.appendChild(timeCell(k.expires_at, true));
    tr.appendChild(timeCell(k.created_at, false));
    tr.appendChild(timeCell(k.last_used_at, false));
    tr.appendChild(usageCell(k, label));

    var actions = cell('actions');
    if (k.status === 'active' && can('apiKey.delete')) {
      var b = document.createElement('button');
      b.type = 'button';
      b.className = 'icon-btn revoke';
      b.setAttribute('aria-label', 'Revoke ' + k.name);
      b.title = 'Revoke ' + k.name;
      b.appendChild($('trash-icon').content.cloneNode(true));
      b.addEventListener('click', function () { openRevoke(k, b); });
      actions.appendChild(b);
    }
    tr.appendChild(actions);
    return tr;
  }

  // A restricted key (scopes or allowed_ips set) gets a "Restricted" tag next to its name and
  // its restrictions as text under it, read with the cell; an unrestricted key gets nothing.
  var SHOWN = 6;
  function markRestrictions(tr, td, k) {
    var scopes = Array.isArray(k.scopes) && k.scopes.length ? k.scopes : null;
    var ips = Array.isArray(k.allowed_ips) && k.allowed_ips.length ? k.allowed_ips : null;
    if (!scopes && !ips) return;
    tr.dataset.restricted = 'true';
    var tag = document.createElement('span');
    tag.className = 'tag-restricted';
    tag.textContent = 'Restricted';
    td.append(' ', tag);
    var box = document.createElement('div');
    box.className = 'restrictions';
    if (scopes) box.appendChild(restrictionLine('scopes', 'Scopes', scopes));
    if (ips) box.appendChild(restrictionLine('ips', 'Allowed IPs', ips));
    td.appendChild(box);
  }

  // A key with a rate limit or a quota shows them as text under its name: "Rate limit:
  // 100/s", "Quota: 1,234 of 10,000 today" (with a meter of the use).
  function fmtCount(n) { return Number(n).toLocaleString('en-US'); }
  function fmtWindow(s) {
    var n = s, unit = 's';
    if (s % 86400 === 0) { n = s / 86400; unit = 'day'; }
    else if (s % 3600 === 0) { n = s / 3600; unit = 'h'; }
    else if (s % 60 === 0) { n = s / 60; unit = 'min'; }
    return (n === 1 ? '' : String(n)) + unit;
  }
  var PERIODS = { day: 'today', month: 'this month', total: 'in total' };
  function markLimits(tr, td, k) {
    var rl = k.rate_limit, q = k.quota;
    if (!rl && !q) return;
    tr.dataset.limited = 'true';
    var box = document.createElement('div');
    box.className = 'limits';
    if (rl) {
      var r = document.createElement('div');
      r.className = 'limit limit-rate';
      var rt = document.createElement('span');
      rt.className = 'restriction-title';
      rt.textContent = 'Rate limit:';
      var rv = document.createElement('span');
      rv.className = 'limit-value';
      rv.textContent = fmtCount(rl.limit) + '/' + fmtWindow(rl.window_seconds);
      r.append(rt, ' ', rv);
      box.appendChild(r);
    }
    if (q) {
      var p = document.createElement('div');
      p.className = 'limit limit-quota';
      var qt = document.createElement('span');
      qt.className = 'restriction-title';
      qt.textContent = 'Quota:';
      var used = typeof k.quota_used === 'number' ? k.quota_used : null;
      var qv = document.createElement('span');
      qv.className = 'limit-value';
      qv.textContent = (used === null ? '?' : fmtCount(used)) + ' of ' + fmtCount(q.limit) + ' ' + (PERIODS[q.period] || q.period);
      p.append(qt, ' ', qv);
      if (used !== null) {
        var m = document.createElement('meter');
        m.min = 0;
        m.max = q.limit;
        m.value = Math.min(used, q.limit);
        m.high = q.limit * 0.9;
        m.optimum = 0;
        m.setAttribute('aria-label', 'Quota used');
        p.append(' ', m);
      }
      if (k.quota_resets_at) p.title = 'Resets ' + fmtTime(k.quota_resets_at, false) + ' UTC';
      box.appendChild(p);
    }
    td.appendChild(box);
  }

  function restrictionLine(kind, title, items) {
    var p = document.createElement('div');
    p.className = 'restriction restriction-' + kind;
    var t = document.createElement('span');
    t.className = 'restriction-title';
    t.textContent = title + ':';
    p.appendChild(t);
    var shown = items.length > SHOWN ? items.slice(0, SHOWN - 1) : items;
    appendChips(p, shown);
    if (shown.length < items.length) {
      // The rest behind a disclosure (a button for keyboards and screen readers alike).
      var more = document.createElement('details');
      var sum = document.createElement('summary');
      var rest = items.length - shown.length;
      sum.textContent = rest + ' more';
      more.appendChild(sum);
      more.addEventListener('toggle', function () { sum.textContent = more.open ? 'show fewer' : rest + ' more'; });
      appendChips(more, items.slice(shown.length));
      p.append(' ', more);
    }
    return p;
  }

  function appendChips(parent, items) {
    items.forEach(function (s) {
      var c = document.createElement('code');
      c.className = 'chip';
      c.textContent = s;
      parent.append(' ', c);
    });
  }

  function renderKeys() {
    var rows = $('rows');
    rows.replaceChildren.apply(rows, state.keys.map(rowFor));
    loadRowUsage();
    var pages = state.cursors.length;
    $('empty').hidden = state.keys.length > 0 || pages > 0;
    $('pager').hidden = !(state.hasMore || pages > 0);
    $('prev').disabled = pages === 0;
    $('next').disabled = !state.hasMore;
    var start = pages * PAGE + 1;
    $('page-info').textContent = state.keys.length
      ? 'Keys ' + start + '–' + (start + state.keys.length - 1) : 'No keys on this page';
  }

  function showBanner(msg) {
    $('banner-text').textContent = msg;
    $('banner').hidden = false;
  }
  function hideBanner() {
    $('banner').hidden = true;
    $('banner-text').textContent = '';
  }

  // ---- Usage ----

  // Requests per key, drawn by the page as inline SVG (no script or style from elsewhere:
  // geometry is SVG attributes, colours are classes or the patterns in index.html).
  var SVGNS = 'http://www.w3.org/2000/svg';
  var HOUR = 3600 * 1000;
  var DAY = 24 * HOUR;
  var ROW_USAGE_CONCURRENCY = 4;
  // The refusal codes a key's usage counts, in the order the charts stack them (each has its
  // fill in index.html; any other code is drawn as "other").
  var CODES = ['api_key_revoked', 'api_key_expired', 'api_key_ip_not_allowed',
    'api_key_insufficient_scope', 'rate_limit_exceeded', 'quota_exceeded'];
  // The ranges: n buckets of the granularity, the last one holding now.
  var RANGES = {
    day: { g: 'hour', step: HOUR, n: 24, label: 'Requests in the last 24 hours, by hour',
      tick: function (d) { return d.getUTCHours() % 4 === 0; },
      fmt: function (d) { return pad(d.getUTCHours()) + ':00'; } },
    week: { g: 'hour', step: HOUR, n: 168, label: 'Requests in the last 7 days, by hour',
      tick: function (d) { return d.getUTCHours() === 0; },
      fmt: function (d) { return ymd(d).slice(5); } },
    month: { g: 'day', step: DAY, n: 30, label: 'Requests in the last 30 days, by day',
      tick: function (d, i, n) { return (n - 1 - i) % 5 === 0; },
      fmt: function (d) { return ymd(d).slice(5); } }
  };

  function svg(tag, attrs, cls) {
    var e = document.createElementNS(SVGNS, tag);
    if (cls) e.setAttribute('class', cls);
    if (attrs) Object.keys(attrs).forEach(function (a) { e.setAttribute(a, String(attrs[a])); });
    return e;
  }

  function isoUTC(ms) { return new Date(ms).toISOString().replace('.000Z', 'Z'); }

  function usageQuery(r) {
    var end = Math.floor(Date.now() / r.step) * r.step + r.step; // the end of now's bucket
    return 'granularity=' + r.g + '&from=' + isoUTC(end - r.n * r.step) + '&to=' + isoUTC(end);
  }

  function usagePath(k, r) {
    return 'instances/' + encodeURIComponent(k.instance) + '/keys/' + encodeURIComponent(k.id) + '/usage?' + usageQuery(r);
  }

  function refusedSum(m) {
    var n = 0;
    Object.keys(m || {}).forEach(function (c) { n += m[c]; });
    return n;
  }

  // The codes of a refusal map, most refusals first (ties by name).
  function byCount(m) {
    return Object.keys(m || {}).filter(function (c) { return m[c] > 0; }).sort(function (a, b) {
      return m[b] - m[a] || (a < b ? -1 : a > b ? 1 : 0);
    });
  }

  // "1,234 let through · 56 refused: api_key_revoked 50, rate_limit_exceeded 6"
  function totalsText(total) {
    var refused = total.refused || {};
    var codes = byCount(refused);
    var text = fmtCount(total.ok || 0) + ' let through · ' + fmtCount(refusedSum(refused)) + ' refused';
    if (codes.length) {
      text += ': ' + codes.map(function (c) { return c + ' ' + fmtCount(refused[c]); }).join(', ');
    }
    return text;
  }

  function fillOf(code) {
    return 'url(#fill-' + (code === 'ok' || CODES.indexOf(code) >= 0 ? code : 'other') + ')';
  }

  // A row's chart loads after the list shows, a few at a time; a failure leaves a dash.
  function resetRowUsage() {
    state.usage = {};
    state.usageQueue = [];
    state.usageGen++;
  }

  function usageCell(k, link) {
    var td = cell('usage');
    var u = state.usage[k.id];
    if (u && !u.pending) drawRowUsage(td, u, k, link);
    else {
      td.dataset.usage = 'loading';
      var s = document.createElement('span');
      s.className = 'spark-loading';
      var sr = document.createElement('span');
      sr.className = 'sr-only';
      sr.textContent = 'Loading requests…';
      s.appendChild(sr);
      td.appendChild(s);
    }
    return td;
  }

  function loadRowUsage() {
    state.keys.forEach(function (k) {
      if (state.usage[k.id]) return;
      state.usage[k.id] = { pending: true };
      state.usageQueue.push(k);
    });
    pumpRowUsage();
  }

  function pumpRowUsage() {
    while (state.usageActive < ROW_USAGE_CONCURRENCY && state.usageQueue.length) {
      fetchRowUsage(state.usageQueue.shift());
    }
  }

  async function fetchRowUsage(k) {
    var gen = state.usageGen;
    state.usageActive++;
    var u;
    try {
      var a = await api('GET', usagePath(k, RANGES.day));
      u = { ok: a.total.ok, refused: refusedSum(a.total.refused), data: a.data };
    } catch (e) {
      u = { error: e.message || 'unknown error' };
      // The store keeps no usage or is down, or the API is unreachable: every other row
      // would fail the same way, so they show the dash without asking.
      if (gen === state.usageGen && !e.handled && (e.status === 503 || e.status === 0)) {
        state.usageQueue.splice(0).forEach(function (q) { setRowUsage(q, { error: e.message }); });
      }
    } finally {
      state.usageActive--;
    }
    if (gen === state.usageGen) setRowUsage(k, u);
    pumpRowUsage();
  }

  function setRowUsage(k, u) {
    state.usage[k.id] = u;
    var tr = document.querySelector('#rows tr[data-key-id="' + CSS.escape(k.id) + '"]');
    if (!tr) return;
    var td = tr.querySelector('td.usage');
    td.replaceChildren();
    drawRowUsage(td, u, k, tr.querySelector('a.key-name'));
  }

  function drawRowUsage(td, u, k, link) {
    td.removeAttribute('title');
    if (u.error) {
      td.dataset.usage = 'error';
      td.title = 'Usage unavailable: ' + u.error;
      var dash = document.createElement('span');
      dash.className = 'usage-none';
      dash.setAttribute('aria-hidden', 'true');
      dash.textContent = '—';
      var sr = document.createElement('span');
      sr.className = 'sr-only';
      sr.textContent = 'Usage unavailable';
      td.append(dash, sr);
      return;
    }
    td.dataset.usage = 'loaded';
    var total = u.ok + u.refused;
    var W = 96, H = 24, n = u.data.length || 1, bw = W / n;
    var max = 0;
    u.data.forEach(function (b) { max = Math.max(max, b.ok + refusedSum(b.refused)); });
    var label = 'Requests in the last 24 hours: ' + fmtCount(total) + (u.refused ? ' (' + fmtCount(u.refused) + ' refused)' : '');
    var chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': label, focusable: 'false' }, 'spark');
    chart.appendChild(svg('rect', { x: 0, y: H - 1, width: W, height: 1 }, 'spark-base'));
    u.data.forEach(function (b, i) {
      var ref = refusedSum(b.refused), all = b.ok + ref;
      if (!all) return;
      var h = Math.max(1.5, all / max * (H - 2));
      var hr = ref ? Math.max(1.5, ref / all * h) : 0;
      var x = i * bw + bw * 0.1, w = bw * 0.8;
      // Let through at the bottom, refused on top, as in the larger chart.
      if (all > ref) chart.appendChild(svg('rect', { x: x, y: H - 1 - h + hr, width: w, height: h - hr }, 'spark-ok'));
      if (ref) chart.appendChild(svg('rect', { x: x, y: H - 1 - h, width: w, height: hr }, 'spark-refused'));
    });
    chart.addEventListener('click', function () { openUsage(k, link); });
    var num = document.createElement('span');
    num.className = 'spark-total' + (u.refused ? ' has-refused' : '');
    num.setAttribute('aria-hidden', 'true');
    num.textContent = fmtCount(total);
    td.append(chart, num);
  }

  // The usage dialog: a larger chart of one key's requests, successes and refusals by code.

  function openUsage(k, opener) {
    state.usageKey = k;
    state.opener = opener;
    $('usage-title').textContent = 'Usage of ' + k.name;
    $('usage-sub').textContent = mask(k.prefix) + ' · ' + instanceLabel();
    // Nothing of the previous key's chart shows while this one's loads.
    $('usage-chart').replaceChildren();
    $('usage-legend').replaceChildren();
    setUsageRange('day');
    $('usage-dialog').showModal();
    document.querySelector('.range-btn[aria-pressed="true"]').focus();
    loadUsage();
  }

  function closeUsage() {
    state.usageKey = null;
    state.usageSeq++;
    var d = $('usage-dialog');
    if (d.open) d.close();
    restoreFocus();
  }

  function setUsageRange(name) {
    state.usageRange = name;
    document.querySelectorAll('.range-btn').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b.dataset.range === name));
    });
    $('usage-caption').textContent = RANGES[name].label;
  }

  async function loadUsage() {
    var k = state.usageKey;
    if (!k) return;
    var seq = ++state.usageSeq;
    var r = RANGES[state.usageRange];
    var fig = $('usage-figure');
    fig.setAttribute('aria-busy', 'true');
    setError('usage-error', '');
    $('usage-totals').textContent = 'Loading…';
    var u;
    try {
      u = await api('GET', usagePath(k, r));
    } catch (e) {
      if (seq !== state.usageSeq || e.handled) return;
      fig.removeAttribute('aria-busy');
      $('usage-chart').replaceChildren();
      $('usage-legend').replaceChildren();
      $('usage-totals').textContent = '';
      setError('usage-error', 'Could not load the usage: ' + e.message);
      return;
    }
    if (seq !== state.usageSeq) return;
    drawUsage(u, r);
    $('usage-totals').textContent = totalsText(u.total || { ok: 0, refused: {} });
    fig.removeAttribute('aria-busy');
  }

  // niceTop rounds a maximum up to 1, 2 or 5 times a power of ten.
  function niceTop(max) {
    if (max <= 1) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= max) return steps[i] * p;
    return 10 * p;
  }

  function drawUsage(u, r) {
    var W = 720, H = 240, L = 52, R = 8, T = 10, B = 26;
    var pw = W - L - R, ph = H - T - B;
    var data = u.data || [];
    var n = data.length || 1, bw = pw / n;
    // The series: let through, then each refusal code seen, known codes in their order.
    var seen = {};
    data.forEach(function (b) { Object.keys(b.refused || {}).forEach(function (c) { if (b.refused[c] > 0) seen[c] = true; }); });
    var codes = CODES.filter(function (c) { return seen[c]; })
      .concat(Object.keys(seen).filter(function (c) { return CODES.indexOf(c) < 0; }).sort());
    var max = 0;
    data.forEach(function (b) { max = Math.max(max, b.ok + refusedSum(b.refused)); });
    var top = niceTop(max);
    var y = function (v) { return T + ph - v / top * ph; };

    var chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': r.label, focusable: 'false' }, 'chart');
    chart.dataset.buckets = String(data.length);
    // Grid and the y axis.
    var ticks = top === 1 ? [0, 1] : [0, top / 2, top];
    ticks.forEach(function (v) {
      chart.appendChild(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v) }, v === 0 ? 'axis' : 'grid'));
      var t = svg('text', { x: L - 8, y: y(v) + 4, 'text-anchor': 'end' }, 'tick');
      t.textContent = fmtCount(v);
      chart.appendChild(t);
    });
    // The bars, one per bucket, stacked from the bottom: let through, then refusals.
    data.forEach(function (b, i) {
      var d = new Date(b.start);
      var x = L + i * bw;
      if (r.tick(d, i, n)) {
        chart.appendChild(svg('line', { x1: x, x2: x, y1: T + ph, y2: T + ph + 4 }, 'axis'));
        var t = svg('text', { x: x, y: H - 6, 'text-anchor': i === 0 ? 'start' : 'middle' }, 'tick');
        t.textContent = r.fmt(d);
        chart.appendChild(t);
      }
      var ref = refusedSum(b.refused), all = b.ok + ref;
      if (!all) return;
      var g = svg('g', null, 'bar');
      var tip = svg('title');
      tip.textContent = (r.g === 'day' ? ymd(d) : fmtTime(b.start)) + ' UTC: ' + totalsText(b);
      g.appendChild(tip);
      var base = 0;
      var bx = x + Math.min(1, bw * 0.15), w = Math.max(1, bw - 2 * Math.min(1, bw * 0.15));
      [['ok', b.ok]].concat(codes.map(function (c) { return [c, (b.refused || {})[c] || 0]; })).forEach(function (s) {
        if (!s[1]) return;
        var y0 = y(base), y1 = Math.min(y(base + s[1]), y0 - 1); // at least a pixel each
        g.appendChild(svg('rect', { x: bx, y: y1, width: w, height: y0 - y1, fill: fillOf(s[0]) }, 'seg seg-' + s[0]));
        base = top * (T + ph - y1) / ph;
      });
      chart.appendChild(g);
    });
    if (!max) {
      var none = svg('text', { x: L + pw / 2, y: T + ph / 2, 'text-anchor': 'middle' }, 'chart-empty');
      none.textContent = 'No requests in this range';
      chart.appendChild(none);
    }
    $('usage-chart').replaceChildren(chart);

    // The legend: each series by name, with its fill.
    var items = [['ok', 'Let through']].concat(codes.map(function (c) { return [c, c]; }));
    $('usage-legend').replaceChildren.apply($('usage-legend'), items.map(function (it) {
      var li = document.createElement('li');
      li.dataset.series = it[0];
      var sw = svg('svg', { viewBox: '0 0 12 12', 'aria-hidden': 'true', focusable: 'false' }, 'swatch');
      sw.appendChild(svg('rect', { width: 12, height: 12, rx: 2, fill: fillOf(it[0]) }));
      var name = document.createElement('span');
      name.textContent = it[1];
      li.append(sw, name);
      return li;
    }));
  }

  // ---- Create ----

  function setError(id, msg) {
    var p = $(id);
    p.textContent = msg || '';
    p.hidden = !msg;
  }

  function instanceLabel() {
    for (var i = 0; i < state.instances.length; i++) {
      if (state.instances[i].id === state.instance) {
        return state.instances[i].name + ' · ' + state.instances[i].environment;
      }
    }
    return state.instance;
  }

  function openCreate() {
    var btn = $('create');
    if (btn.disabled || btn.hidden || !state.instance) return;
    state.opener = btn;
    resetCreate();
    $('create-instance').textContent = 'Instance: ' + instanceLabel();
    var expiry = $('key-expiry');
    expiry.min = tomorrowUTC();
    $('expiry-min').textContent = expiry.min;
    $('create-dialog').showModal();
    $('key-name').focus();
  }

  function wipeSecret() {
    var input = $('secret');
    if (input) {
      input.value = '';
      input.remove();
    }
    var status = $('copy-status');
    status.textContent = '';
    status.className = 'copy-status';
  }

  function closeCreate() {
    resetCreate();
    var d = $('create-dialog');
    if (d.open) d.close();
    restoreFocus();
  }

  function closeRevoke() {
    state.revoking = null;
    var d = $('revoke-dialog');
    if (d.open) d.close();
    restoreFocus();
  }

  function resetCreate() {
    wipeSecret();
    var d = $('create-dialog');
    d.removeAttribute('closedby');
    $('create-title').textContent = 'Create API key';
    $('create-form').reset();
    $('create-step').hidden = false;
    $('secret-step').hidden = true;
    $('create-cancel').hidden = false;
    $('create-submit').hidden = false;
    $('create-submit').disabled = false;
    $('create-submit').textContent = 'Create key';
    $('create-close').hidden = true;
    $('key-name').removeAttribute('aria-invalid');
    markInvalid(null);
    setError('create-error', '');
  }

  async function submitCreate(ev) {
    ev.preventDefault();
    var nameInput = $('key-name');
    var name = nameInput.value;
    if (name.trim() === '') {
      nameInput.setAttribute('aria-invalid', 'true');
      setError('create-error', 'Enter a key name (1–100 characters), e.g. "Production server".');
      nameInput.focus();
      return;
    }
    nameInput.removeAttribute('aria-invalid');
    var body = { name: name };
    var exp = $('key-expiry').value;
    if (exp) body.expires_at = exp;
    // Empty restriction fields are not sent (null: any route, any address). The API checks
    // each value and says what is wrong.
    var scopes = splitList($('key-scopes').value);
    if (scopes.length) body.scopes = scopes;
    var ips = splitList($('key-ips').value);
    if (ips.length) body.allowed_ips = ips;
    markInvalid(null);
    var submit = $('create-submit');
    submit.disabled = true;
    submit.textContent = 'Creating…';
    setError('create-error', '');
    var instance = state.instance;
    var key;
    try {
      key = await api('POST', 'instances/' + encodeURIComponent(instance) + '/keys', body);
    } catch (e) {
      submit.disabled = false;
      submit.textContent = 'Create key';
      if (!e.handled) {
        setError('create-error', e.message);
        markInvalid(e);
      }
      return;
    }
    var secret = key.secret;
    delete key.secret;
    showSecret(secret);
    if (can('apiKey.read') && instance === state.instance) {
      state.cursors = [];
      loadKeys();
    }
  }

  function splitList(v) {
    return v.split(/[\s,]+/).filter(function (s) { return s !== ''; });
  }

  // markInvalid flags the restriction field an API refusal is about (its message names it).
  function markInvalid(e) {
    var msg = e && e.status === 400 ? e.message : '';
    var fields = { 'key-scopes': /\bscopes?\b/i, 'key-ips': /allowed[_ ]ips?\b/i };
    Object.keys(fields).forEach(function (id) {
      if (msg && fields[id].test(msg)) $(id).setAttribute('aria-invalid', 'true');
      else $(id).removeAttribute('aria-invalid');
    });
  }

  function showSecret(secret) {
    var d = $('create-dialog');
    d.setAttribute('closedby', 'none');
    $('create-title').textContent = 'API key created';
    $('create-step').hidden = true;
    $('secret-step').hidden = false;
    $('create-cancel').hidden = true;
    $('create-submit').hidden = true;
    $('create-close').hidden = false;
    var input = document.createElement('input');
    input.type = 'text';
    input.id = 'secret';
    input.className = 'secret-input';
    input.readOnly = true;
    input.spellcheck = false;
    input.autocomplete = 'off';
    input.setAttribute('aria-describedby', 'secret-warning');
    input.value = secret;
    $('secret-row').insertBefore(input, $('copy'));
    input.focus();
    // Selected, with its start in view: Ctrl+C copies it too.
    input.setSelectionRange(0, secret.length, 'backward');
  }

  async function copySecret() {
    var input = $('secret');
    if (!input) return;
    var ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(input.value);
        ok = true;
      } catch (e) { ok = false; }
    }
    if (!ok) {
      input.focus();
      input.select();
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    }
    var status = $('copy-status');
    status.className = 'copy-status ' + (ok ? 'ok' : 'fail');
    status.textContent = ok ? 'Copied' : 'Copy failed: the secret is selected, press Ctrl+C (⌘C on a Mac) to copy it.';
  }

  // ---- Revoke ----

  function openRevoke(k, btn) {
    state.revoking = k;
    state.opener = btn;
    $('revoke-name').textContent = k.name;
    $('revoke-prefix').textContent = mask(k.prefix);
    setError('revoke-error', '');
    $('revoke-submit').disabled = false;
    $('revoke-submit').textContent = 'Revoke key';
    $('revoke-dialog').showModal();
    $('revoke-cancel').focus();
  }

  async function submitRevoke(ev) {
    ev.preventDefault();
    var k = state.revoking;
    if (!k) return;
    var submit = $('revoke-submit');
    submit.disabled = true;
    submit.textContent = 'Revoking…';
    setError('revoke-error', '');
    var done;
    try {
      done = await api('DELETE', 'instances/' + encodeURIComponent(k.instance) + '/keys/' + encodeURIComponent(k.id));
    } catch (e) {
      submit.disabled = false;
      submit.textContent = 'Revoke key';
      if (!e.handled) setError('revoke-error', e.message);
      return;
    }
    state.keys = state.keys.map(function (x) { return x.id === done.id ? done : x; });
    renderKeys();
    var row = document.querySelector('tr[data-key-id="' + CSS.escape(done.id) + '"] td.name');
    state.opener = row;
    closeRevoke();
    showPropagation(done);
  }

  // After a revoke: how many of the live gateways had applied it when the call answered
  // (the call waits at most a second), naming those that had not.
  function showPropagation(k) {
    var n = $('notice');
    var p = k.propagation;
    if (!p) {
      n.hidden = true;
      return;
    }
    var text = 'Revoked — confirmed by ' + p.confirmed + ' of ' + p.gateways + ' gateway' + (p.gateways === 1 ? '' : 's');
    var missing = (p.missing || []).map(function (g) { return g.hostname ? g.id + ' (' + g.hostname + ')' : g.id; });
    if (missing.length) {
      text += '; not yet confirmed by ' + missing.join(', ') + '. It will refuse the key once it catches up, or drop out of the fleet within 10 s.';
    } else {
      text += '.';
    }
    n.textContent = text;
    n.className = 'notice' + (p.confirmed < p.gateways ? ' partial' : '');
    n.dataset.confirmed = String(p.confirmed);
    n.dataset.gateways = String(p.gateways);
    n.hidden = false;
  }

  function restoreFocus() {
    var o = state.opener;
    state.opener = null;
    if (o && o.isConnected && !o.hidden && !o.disabled) o.focus();
    else if (!$('app').hidden) $('page-title').focus();
    else if (!$('signin').hidden) $('token').focus();
  }

  // ---- Wiring ----

  function init() {
    $('page-title').tabIndex = -1;
    $('signin-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var token = $('token').value.trim();
      if (!token) {
        $('signin-error-title').textContent = '';
        $('signin-error-text').textContent = 'Enter an admin token.';
        $('signin-error').hidden = false;
        $('token').focus();
        return;
      }
      sessionStorage.setItem(TOKEN, token);
      $('token').value = '';
      $('signin-submit').disabled = true;
      loadSession();
    });
    $('signout').addEventListener('click', signOut);
    $('instance').addEventListener('change', function () { selectInstance(this.value); });
    $('banner-close').addEventListener('click', hideBanner);
    $('next').addEventListener('click', function () {
      if (!state.hasMore || !state.keys.length) return;
      state.cursors.push(state.keys[state.keys.length - 1].id);
      loadKeys();
    });
    $('prev').addEventListener('click', function () {
      if (!state.cursors.length) return;
      state.cursors.pop();
      loadKeys();
    });

    $('create').addEventListener('click', openCreate);
    $('create-form').addEventListener('submit', submitCreate);
    $('create-cancel').addEventListener('click', closeCreate);
    $('create-close').addEventListener('click', closeCreate);
    $('copy').addEventListener('click', copySecret);
    var cd = $('create-dialog');
    // Escape: the dialog closes through closeCreate (synchronously: the secret is wiped and
    // focus returns before anything else runs), and not at all while it shows a secret,
    // which closes only through Close.
    cd.addEventListener('cancel', function (ev) {
      ev.preventDefault();
      if (!$('secret')) closeCreate();
    });
    cd.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape' && $('secret')) ev.preventDefault();
    });
    // A close by any other way still leaves no secret behind.
    cd.addEventListener('close', function () { if (!cd.open) wipeSecret(); });

    $('usage-close').addEventListener('click', closeUsage);
    $('usage-dialog').addEventListener('cancel', function (ev) {
      ev.preventDefault();
      closeUsage();
    });
    document.querySelectorAll('.range-btn').forEach(function (b) {
      b.addEventListener('click', function () {
        if (b.getAttribute('aria-pressed') === 'true') return;
        setUsageRange(b.dataset.range);
        loadUsage();
      });
    });

    $('revoke-form').addEventListener('submit', submitRevoke);
    $('revoke-cancel').addEventListener('click', closeRevoke);
    $('revoke-dialog').addEventListener('cancel', function (ev) {
      ev.preventDefault();
      closeRevoke();
    });

    window.addEventListener('unhandledrejection', function (ev) {
      var r = ev.reason;
      if (r && r.handled) return;
      showBanner('Unexpected error: ' + (r && r.message || r));
    });

    if (sessionStorage.getItem(TOKEN)) loadSession();
    else promptSignIn('');
  }

  init();
})();
