// My access: active grants with connection commands, the request form, eligible targets,
// my requests with their approval progress, my recent sessions.
import { api, el, fill, empty, load, flash, describeError, fmtTime, fmtDuration, badge, startCountdowns, table, ApiError, mfaLink } from './common.js';
import { showCheckouts } from './checkouts.js';

const $ = (id) => document.getElementById(id);
const DRAFT = 'tollgate-request-draft';
/** Protocols with a desktop the browser can open (/vnc/view, /rdp/view). */
const DESKTOPS = new Set(['vnc', 'rdp']);
let targets = [];

function stateBadge(state) {
  const kind = { approved: 'ok', active: 'ok', pending: 'warn', queued: 'warn', denied: 'bad', revoked: 'bad', expired: '', cancelled: '' }[state] ?? '';
  return badge(state, kind);
}

async function showSecret(grant, box, button, mfaCode) {
  button.disabled = true;
  box.replaceChildren(el('p', {}, 'Minting a connection secret…'));
  try {
    const s = await api('POST', `/api/v1/grants/${encodeURIComponent(grant.id)}/secret`, mfaCode ? { mfaCode } : {});
    const cmds = Object.entries(s.commands || {});
    const rows = cmds.length
      ? cmds.map(([client, line]) => {
        const pre = el('pre', { class: 'cmd', tabindex: '0', 'data-client': client }, line);
        const copy = el('button', { type: 'button', class: 'copy', 'aria-label': `Copy the ${client} command` }, 'Copy');
        copy.addEventListener('click', async () => {
          try { await navigator.clipboard.writeText(line); copy.textContent = 'Copied'; } catch {
            const r = document.createRange(); r.selectNodeContents(pre); const sel = getSelection(); sel.removeAllRanges(); sel.addRange(r);
            copy.textContent = 'Selected — press Ctrl+C';
          }
        });
        // A connection file (mstsc's ".rdp file") can also be downloaded, named after the target.
        const file = /\(\.([a-z0-9]+) file\)$/i.exec(client);
        const download = file
          ? el('a', { class: 'download', href: URL.createObjectURL(new Blob([line.replace(/\n/g, '\r\n') + '\r\n'], { type: 'application/octet-stream' })), download: `${grant.target}.${file[1].toLowerCase()}` }, `Download .${file[1].toLowerCase()}`)
          : null;
        return el('div', { class: 'cmdrow' }, el('span', { class: 'client' }, client), pre, el('span', { class: 'actions' }, copy, download));
      })
      : [el('p', {}, `Host ${s.host}, port ${s.port}, user `, el('code', {}, s.username), ', password below.')];
    box.replaceChildren(
      el('div', { class: 'secret' },
        ...rows,
        el('p', { class: 'muted' }, 'Secret (shown once): ', el('code', { class: 'secret-value' }, s.secret)),
        el('p', { class: 'muted' }, `Single use; valid until ${fmtTime(Date.parse(s.expiresAt))}. Get a new one for each connection.`)),
    );
  } catch (e) {
    box.replaceChildren(el('p', { class: 'err', role: 'alert' }, describeError(e)));
    // MFA at connect: type the authenticator code here, or sign in again with MFA.
    if (e instanceof ApiError && e.body.error === 'mfa_required') {
      const id = `mfa-${grant.id}`;
      const input = el('input', { id, name: 'mfaCode', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '8', size: '8' });
      const form = el('form', { class: 'inline mfa-code' }, el('label', { for: id }, 'Authenticator code'), input, el('button', { type: 'submit', class: 'primary' }, 'Get the command'));
      form.addEventListener('submit', (ev) => { ev.preventDefault(); if (input.value.trim()) void showSecret(grant, box, button, input.value.trim()); });
      box.append(form, el('p', {}, 'Or: ', mfaLink(e)));
      input.focus();
    }
  } finally {
    button.disabled = false;
    button.textContent = 'Get a new connection command';
  }
}

/** More time on a grant: the same policy as a new request (approvers may have to agree); the grant keeps running meanwhile. */
function extendForm(g) {
  const dId = `ext-d-${g.id}`;
  const rId = `ext-r-${g.id}`;
  const err = el('p', { class: 'err', role: 'alert' });
  const duration = el('input', { id: dId, name: 'duration', value: '1h', size: '6', required: true });
  const reason = el('input', { id: rId, name: 'reason', required: true, placeholder: 'Why you need longer' });
  const form = el('form', { class: 'form extend', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: dId }, 'Extend by'), duration),
    el('div', { class: 'field wide' }, el('label', { for: rId }, 'Reason'), reason),
    err, el('button', { type: 'submit' }, `Extend ${g.target}`));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const r = await api('POST', `/api/v1/grants/${encodeURIComponent(g.id)}/extend`, { duration: duration.value.trim(), reason: reason.value.trim() });
      flash(r.state === 'approved' ? `Extended: ${g.target} is yours until ${fmtTime(r.grant.expiresAt)}.` : `Extension requested; it waits for stage ${r.currentStage + 1} of ${r.stages.length}. Your access goes on meanwhile.`);
      await Promise.all([loadGrants(), loadRequests()]);
    } catch (e) {
      err.textContent = describeError(e);
      const mfa = mfaLink(e);
      if (mfa) err.append(' ', mfa);
      const field = e.body?.field;
      if (field === 'duration' || field === 'reason') (field === 'duration' ? duration : reason).setAttribute('aria-invalid', 'true');
      button.disabled = false;
    }
  });
  return el('details', { class: 'extend' }, el('summary', {}, 'Need longer?'), form);
}

async function loadGrants() {
  const box = $('grants');
  await load(box, async () => {
    const [all, checkouts] = await Promise.all([api('GET', '/api/v1/grants?state=active'), api('GET', '/api/v1/checkouts').catch(() => [])]);
    const grants = all.filter((g) => g.active);
    const held = new Set(checkouts.map((c) => c.holder?.grantId).filter(Boolean));
    if (!grants.length) return fill(box, empty('No active grants. Request access below; once approved it shows up here with its connection command.'));
    fill(box, grants.map((g) => {
      const out = el('div', { class: 'secret-box', 'aria-live': 'polite' });
      const btn = el('button', { type: 'button', class: 'primary' }, 'Get connection command');
      btn.addEventListener('click', () => showSecret(g, out, btn));
      // A checked-out account: hand it back early (its password rotates, the next in line gets it).
      const checkin = held.has(g.id) ? el('button', { type: 'button' }, `Check in ${g.target}`) : null;
      checkin?.addEventListener('click', async () => {
        checkin.disabled = true;
        try { await api('POST', `/api/v1/grants/${encodeURIComponent(g.id)}/checkin`, {}); flash(`${g.target} is checked in; its password was rotated.`); await Promise.all([loadGrants(), showCheckouts($('checkouts'), $('checkouts-section'))]); } catch (e) { flash(describeError(e), 'bad'); checkin.disabled = false; }
      });
      // Desktops also open in the browser, in a new tab (the gateway checks the grant again there).
      const open = DESKTOPS.has(g.protocol)
        ? el('a', { class: 'button open', href: `/${g.protocol}/view?${new URLSearchParams({ target: g.target, role: g.role })}`, target: '_blank', rel: 'noopener', 'aria-label': `Open ${g.target} as ${g.role} in the browser (new tab)` }, 'Open')
        : null;
      return el('article', { class: 'card', 'data-grant': g.id, 'data-target': g.target },
        el('h3', {}, `${g.target} `, el('span', { class: 'muted' }, `as ${g.role}`), g.breakGlass ? badge('break-glass', 'bad') : null, held.has(g.id) ? badge('checked out to you', 'warn') : null),
        el('p', {}, badge(g.protocol ?? 'unknown'), ' ', el('span', { 'data-until': String(Date.now() + g.msLeft) }, `${fmtDuration(g.msLeft)} left`),
          el('span', { class: 'muted' }, ` · until ${fmtTime(g.expiresAt)}`)),
        el('div', { class: 'actions' }, btn, open ? ' ' : null, open, checkin), out, g.breakGlass ? null : extendForm(g));
    }));
  });
}

function fillRoles() {
  const t = targets.find((x) => x.name === $('rq-target').value);
  $('rq-role').replaceChildren(...(t ? t.roles.map((r) => el('option', { value: r }, r)) : []));
  $('rq-max').textContent = t && t.maxDurationMs ? `At most ${fmtDuration(t.maxDurationMs)}.` : '';
}

/** Put back what was typed before a step-up sign-in (kept in this tab only). */
function restoreDraft() {
  let d = null;
  try { d = JSON.parse(sessionStorage.getItem(DRAFT) ?? 'null'); } catch { /* ignore */ }
  sessionStorage.removeItem(DRAFT);
  if (!d || !targets.some((t) => t.name === d.target)) return;
  $('rq-target').value = d.target;
  fillRoles();
  if ([...$('rq-role').options].some((o) => o.value === d.role)) $('rq-role').value = d.role;
  $('rq-duration').value = d.duration || $('rq-duration').value;
  $('rq-reason').value = d.reason || '';
  flash('Your request is filled in again; send it now that you signed in with your authenticator.');
}

async function loadTargets() {
  const box = $('targets');
  await load(box, async () => {
    targets = await api('GET', '/api/v1/targets');
    const sel = $('rq-target');
    sel.replaceChildren(...targets.map((t) => el('option', { value: t.name }, `${t.name} (${t.protocol}, ${t.risk} risk)`)));
    const want = new URLSearchParams(location.search).get('request');
    if (want) {
      if (targets.some((t) => t.name === want)) { sel.value = want; $('rq-reason').focus(); } else flash(`You cannot request "${want}": it does not exist or you are not eligible for it.`, 'bad');
    }
    fillRoles();
    restoreDraft();
    const form = $('request-form');
    form.querySelector('button[type=submit]').disabled = !targets.length;
    if (!targets.length) return fill(box, empty('No target is open to you. Ask your administrator which policy should cover you.'));
    fill(box, table('Targets you may request', ['Target', 'Protocol', 'Risk', 'Roles', 'Longest', ''], targets.map((t) => el('tr', {},
      el('td', {}, el('strong', {}, t.name), t.description ? el('div', { class: 'muted' }, t.description) : null),
      el('td', {}, t.protocol), el('td', {}, badge(t.risk, t.risk === 'critical' || t.risk === 'high' ? 'bad' : t.risk === 'medium' ? 'warn' : 'ok')),
      el('td', {}, t.roles.join(', ')), el('td', {}, t.maxDurationMs ? fmtDuration(t.maxDurationMs) : '—'),
      el('td', {}, el('a', { href: `?request=${encodeURIComponent(t.name)}`, onclick: (ev) => { ev.preventDefault(); sel.value = t.name; fillRoles(); $('rq-reason').focus(); } }, `Request ${t.name}`)),
    ))));
  });
}

function progress(r) {
  const stages = r.stages || [];
  if (!stages.length) return r.state === 'approved' ? 'approved automatically' : '';
  const done = Math.min(r.currentStage, stages.length);
  return `stage ${Math.min(done + (r.state === 'pending' ? 1 : 0), stages.length)} of ${stages.length}`;
}

let lastStates = null;

async function loadRequests() {
  const box = $('requests');
  await load(box, async () => {
    const reqs = await api('GET', '/api/v1/requests');
    const states = new Map(reqs.map((r) => [r.id, r.state]));
    // Only a request seen pending on this page and approved since is news (not break-glass, not old ones).
    const approvedNow = lastStates ? reqs.find((r) => r.state === 'approved' && ['pending', 'queued'].includes(lastStates.get(r.id))) : null;
    if (approvedNow) {
      flash(`Approved: your access to ${approvedNow.target} is ready under Active grants.`);
      void loadGrants();
    }
    lastStates = states;
    if (!reqs.length) return fill(box, empty('You have not requested anything yet.'));
    fill(box, reqs.map((r) => {
      const approvals = (r.approvals || []).map((a) => el('li', {}, `${a.decision === 'approve' ? 'Approved' : 'Denied'} by ${a.approver}${a.onBehalfOf ? ` for ${a.onBehalfOf} (delegated)` : ''} at ${fmtTime(a.at)}${a.comment ? `: “${a.comment}”` : ''}`));
      const cancel = r.state === 'pending' || r.state === 'queued' ? el('button', { type: 'button' }, 'Cancel request') : null;
      cancel?.addEventListener('click', async () => {
        cancel.disabled = true;
        try { await api('POST', `/api/v1/requests/${encodeURIComponent(r.id)}/cancel`, {}); flash('Request cancelled.'); await loadRequests(); } catch (e) { flash(describeError(e), 'bad'); cancel.disabled = false; }
      });
      const steps = (r.stages || []).map((s, i) => el('li', { class: i < r.currentStage ? 'done' : i === r.currentStage && r.state === 'pending' ? 'current' : '' },
        `Stage ${i + 1}: ${s.count} approval${s.count > 1 ? 's' : ''} from ${s.groups.join(' or ')}`));
      return el('article', { class: 'card', 'data-request': r.id },
        el('h3', {}, `${r.extendsGrant ? 'More time on ' : ''}${r.target} as ${r.role} `, stateBadge(r.state)),
        el('p', {}, `${fmtDuration(r.durationMs)} · filed ${fmtTime(r.createdAt)} · `, el('span', { class: 'progress' }, progress(r)), r.mfaRequired ? ' · MFA required' : ''),
        el('p', { class: 'muted' }, `Reason: ${r.reason}`),
        steps.length ? el('ol', { class: 'stages', 'aria-label': 'Approval stages' }, steps) : null,
        approvals.length ? el('ul', { class: 'approvals' }, approvals) : null,
        r.decisionReason && r.state !== 'approved' ? el('p', {}, `Decision: ${r.decisionReason}`) : null,
        cancel);
    }));
  });
}

async function loadMySessions() {
  const box = $('mysessions');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/sessions?limit=20');
    if (!list.length) return fill(box, empty('No sessions yet.'));
    fill(box, table('My recent sessions', ['Target', 'Role', 'Started', 'State', 'Ended because'], list.map((s) => el('tr', { 'data-session': s.id },
      el('td', {}, s.target), el('td', {}, s.role), el('td', {}, fmtTime(s.startedAt)), el('td', {}, stateBadge(s.live ? 'active' : s.state)),
      el('td', {}, s.live ? el('button', { type: 'button', onclick: async (ev) => {
        ev.target.disabled = true;
        try { await api('POST', `/api/v1/sessions/${encodeURIComponent(s.id)}/kill`, { reason: 'ended by its owner from the portal' }); flash(`Your session on ${s.target} was ended.`); } catch (e) { flash(describeError(e), 'bad'); }
        await loadMySessions();
      } }, `End my session on ${s.target}`) : s.endReason ?? '')))));
  });
}

async function setupBreakGlass() {
  let info;
  try { info = await api('GET', '/api/v1/portal/breakglass'); } catch { return; }
  if (!info.eligible || !info.targets.length) return;
  $('bg-section').hidden = false;
  const sel = $('bg-target');
  sel.replaceChildren(...info.targets.map((t) => el('option', { value: t.name }, `${t.name} (${t.protocol}, ${t.risk} risk)`)));
  const roles = () => {
    const t = info.targets.find((x) => x.name === sel.value);
    $('bg-role').replaceChildren(...(t ? t.roles.map((r) => el('option', { value: r }, r)) : []));
  };
  sel.addEventListener('change', roles);
  roles();
  $('bg-max').textContent = `At most ${fmtDuration(info.maxDurationMs)}.`;
  $('bg-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = $('bg-error');
    err.textContent = '';
    if (!$('bg-ack').checked) { err.textContent = 'Confirm that you understand security is alerted.'; $('bg-ack').focus(); return; }
    const button = ev.target.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const g = await api('POST', '/api/v1/breakglass', { target: sel.value, role: $('bg-role').value, duration: $('bg-duration').value.trim(), reason: $('bg-reason').value.trim() });
      flash(`Break-glass access to ${g.target} as ${g.role} is active now. Security has been alerted; a review is open.`);
      $('bg-reason').value = '';
      $('bg-ack').checked = false;
      ev.target.closest('details').open = false;
      await Promise.all([loadGrants(), loadRequests()]);
    } catch (e) {
      err.textContent = describeError(e);
      // Break-glass needs a fresh second factor: offer the step-up sign-in right here.
      const mfa = mfaLink(e);
      if (mfa) err.append(' ', mfa);
      const field = e instanceof ApiError ? e.body.field : null;
      const input = field && ev.target.querySelector(`[name="${CSS.escape(String(field))}"]`);
      if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
    } finally {
      button.disabled = false;
    }
  });
}

$('rq-target').addEventListener('change', fillRoles);
$('request-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const err = $('rq-error');
  err.textContent = '';
  for (const f of form.querySelectorAll('[aria-invalid]')) f.removeAttribute('aria-invalid');
  const body = { target: $('rq-target').value, role: $('rq-role').value, duration: $('rq-duration').value.trim(), reason: $('rq-reason').value.trim() };
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const r = await api('POST', '/api/v1/requests', body);
    flash(r.state === 'approved' ? `Access to ${r.target} approved: your grant is listed under Active grants.`
      : r.state === 'queued' ? `Approved, and queued: ${r.target} is checked out by someone else; you get it when they check it in.`
        : `Request for ${r.target} filed; waiting for approval (${progress(r)}).`);
    $('rq-reason').value = '';
    await Promise.all([loadRequests(), loadGrants()]);
  } catch (e) {
    err.textContent = describeError(e);
    const mfa = mfaLink(e);
    if (mfa) {
      mfa.addEventListener('click', () => sessionStorage.setItem(DRAFT, JSON.stringify(body)));
      err.append(' ', mfa);
    }
    const field = e instanceof ApiError ? e.body.field : null;
    const input = field && form.querySelector(`[name="${CSS.escape(String(field))}"]`);
    if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
  } finally {
    button.disabled = !targets.length;
  }
});

startCountdowns();
await Promise.all([loadGrants(), loadTargets(), loadRequests(), loadMySessions(), setupBreakGlass(), showCheckouts($('checkouts'), $('checkouts-section'))]);
// Keep approval progress and new grants fresh while the page is open.
setInterval(() => { if (!document.hidden && lastStates && [...lastStates.values()].some((st) => st === 'pending' || st === 'queued')) void loadRequests(); }, 5000);
