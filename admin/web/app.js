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
    loadSeq: 0, revoking: null, opener: null
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
    state.opener = null;
  }

  // promptSignIn shows the token prompt, with the reason when there is one (the API's
  // message for a refused token).
  function promptSignIn(message, title) {
    sessionStorage.removeItem(TOKEN);
    state.me = null;
    state.loadSeq++;
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
    var label = document.createElement('span');
    label.className = 'key-name';
    label.textContent = k.name;
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
