// The console's only script: refreshes the live parts of a page, draws the load chart, and
// sends the action forms to the JSON API (after a confirmation) and follows their job until it
// ends. It never builds HTML from data: text goes in with textContent, so nothing a cluster
// reports can run here. Served by the binary itself (no CDN), under CSP script-src 'self'.
'use strict';
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
    if (!response.ok) {
      throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  function setText(id, text) {
    const element = document.getElementById(id);
    if (element) element.textContent = text;
  }

  function human(bytes) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  // Live parts: the page asks for itself again and swaps in the fresh [data-live] elements,
  // so the server's rendering stays the only rendering.
  function refreshLive() {
    const live = document.querySelectorAll('[data-live]');
    if (!live.length) return;
    fetch(`${location.pathname}?live=1`, { credentials: 'same-origin' })
      .then((response) => (response.ok ? response.text() : null))
      .then((html) => {
        if (!html) return;
        const fresh = new DOMParser().parseFromString(html, 'text/html');
        for (const element of live) {
          const replacement = fresh.getElementById(element.id);
          if (replacement) element.replaceChildren(...replacement.childNodes);
        }
      })
      .catch(() => {});
  }
  setInterval(refreshLive, 3000);

  // A job's progress, polled until it ends.
  const panel = document.getElementById('job-panel');
  function watchJob(id) {
    if (!panel) { location.href = `/jobs/${id}`; return; }
    panel.hidden = false;
    panel.dataset.job = id;
    panel.dataset.state = 'running';
    const poll = async () => {
      let job;
      try {
        job = await api('GET', `/api/v1/jobs/${id}`);
      } catch (error) {
        setText('job-state', error.message);
        setTimeout(poll, 2000);
        return;
      }
      setText('job-title', `${job.id}: ${job.action} ${job.cluster}`);
      setText('job-state', job.state === 'running' ? 'running…' : job.state);
      setText('job-log', job.log.slice(-15).join('\n'));
      if (job.state === 'running') { setTimeout(poll, 1000); return; }
      panel.dataset.state = job.state;
      const link = document.getElementById('job-link');
      link.replaceChildren();
      const anchor = document.createElement('a');
      if (job.drill) {
        anchor.href = `/clusters/${encodeURIComponent(job.cluster)}/drills/${encodeURIComponent(job.drill)}`;
        anchor.id = 'drill-link';
        anchor.textContent = 'Open the drill report and its timeline';
      } else {
        anchor.href = `/jobs/${job.id}`;
        anchor.textContent = 'Details';
      }
      link.append(anchor);
      if (job.action === 'delete' && job.state === 'succeeded') location.href = '/';
      else if (panel.dataset.reload === 'true') location.reload();
      else refreshLive();
    };
    poll();
  }
  if (panel && panel.dataset.job) watchJob(panel.dataset.job);

  // Action forms: confirmed, then posted as JSON with the CSRF token.
  function fields(form) {
    const out = {};
    for (const element of form.elements) {
      if (!element.name) continue;
      if (element.type === 'number') {
        if (element.value !== '') out[element.name] = Number(element.value);
      } else {
        out[element.name] = element.value;
      }
    }
    return out;
  }
  for (const form of document.querySelectorAll('form.action, form#create')) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const error = document.getElementById('form-error');
      const body = fields(form);
      try {
        const reply = await api(form.dataset.method || 'POST', form.dataset.url, body);
        // A create or restore makes a new cluster: follow it on its own page.
        if (form.id === 'create' || form.dataset.goto) {
          location.href = `/clusters/${encodeURIComponent(body.name)}`;
          return;
        }
        if (reply && reply.job) {
          watchJob(reply.job);
        } else if (panel) {
          // Kubernetes mode: a spec edit, carried out by the operator; the page follows it.
          panel.hidden = false;
          setText('job-title', '');
          setText('job-state', (reply && reply.message) || 'done');
          refreshLive();
        }
      } catch (failure) {
        if (error) { error.hidden = false; error.textContent = failure.message; }
        else if (panel) { panel.hidden = false; setText('job-state', failure.message); }
        else window.alert(failure.message);
      }
    });
  }

  // The create form: a Sentinel group has one shard (and two replicas by default).
  const topology = document.querySelector('#create select[name=topology]');
  if (topology) {
    topology.addEventListener('change', () => {
      const form = topology.form;
      const sentinel = topology.value === 'sentinel';
      form.elements.masters.value = sentinel ? '1' : '3';
      form.elements.masters.readOnly = sentinel;
      form.elements.replicas.value = sentinel ? '2' : '1';
    });
  }

  // The load chart: ops/s, memory, keys and the proxy's p99 latency, each scaled to its own maximum, from samples
  // polled every 2 s and kept in the page (the last 4 minutes).
  const chart = document.getElementById('chart');
  if (chart) {
    const samples = [];
    const keep = 120;
    const series = [
      ['ops', (s) => s.ops_per_sec],
      ['mem', (s) => s.used_memory],
      ['keys', (s) => s.keys],
      ['lat', (s) => s.latency_p99_us || 0],
    ];
    const draw = () => {
      const ns = 'http://www.w3.org/2000/svg';
      chart.replaceChildren();
      const axis = document.createElementNS(ns, 'line');
      axis.setAttribute('x1', '0'); axis.setAttribute('x2', '600');
      axis.setAttribute('y1', '155'); axis.setAttribute('y2', '155');
      axis.setAttribute('class', 'axis');
      chart.append(axis);
      for (const [name, value] of series) {
        const max = Math.max(1, ...samples.map(value));
        const points = samples.map((s, i) => {
          const x = (i * 600) / Math.max(samples.length - 1, 1);
          const y = 155 - (value(s) / max) * 145;
          return `${x.toFixed(1)},${y.toFixed(1)}`;
        });
        const line = document.createElementNS(ns, 'polyline');
        line.setAttribute('points', points.join(' '));
        line.setAttribute('class', `series ${name}`);
        chart.append(line);
      }
    };
    const poll = async () => {
      try {
        const m = await api('GET', chart.dataset.url);
        samples.push(m);
        if (samples.length > keep) samples.shift();
        setText('m-ops', String(m.ops_per_sec));
        setText('m-mem', m.maxmemory ? `${human(m.used_memory)} / ${human(m.maxmemory)}` : human(m.used_memory));
        setText('m-keys', String(m.keys));
        setText('m-lat', m.latency_p99_us == null ? '–' : `${(m.latency_p99_us / 1000).toFixed(2)} ms`);
        chart.dataset.samples = String(samples.length);
        draw();
      } catch (_) { /* a stopped or busy cluster: try again */ }
      setTimeout(poll, 2000);
    };
    poll();
  }
})();
