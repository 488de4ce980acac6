// REST calls and the live feed. The token lives in this browser's localStorage only.

const TOKEN_KEY = "hub.token";

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

// Every URL is taken relative to the page, so the dashboard also works under a path prefix
// (Home Assistant's ingress serves an add-on at /api/hassio_ingress/<token>/): "/api/x"
// becomes "<page's folder>/api/x", which is "/api/x" when the page is served at the root.
export function url(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).href;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One token dialog at a time, however many calls were refused while it is open.
let asking = null;
function askTokenOnce() {
  if (!asking) {
    asking = Promise.resolve(window.hubAskToken ? window.hubAskToken() : false).finally(() => {
      asking = null;
    });
  }
  return asking;
}

export async function api(path, { method = "GET", body, auth = false, asked = false } = {}) {
  const headers = {};
  const token = getToken();
  if (token && (auth || method !== "GET" || sessionStorage.getItem("hub.readToken"))) {
    headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(path), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && method === "GET" && token && !headers.Authorization) {
    // Reading is token-protected on this hub: send it from now on.
    sessionStorage.setItem("hub.readToken", "1");
    return api(path, { method, body, auth: true });
  }
  if (response.status === 401 && method === "GET" && !asked) {
    // Reading needs the token here (web.public_read is off): ask for it, then try again.
    if (await askTokenOnce()) return api(path, { method, body, auth: true, asked: true });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  }
  return data;
}

export function query(metric, { device, from, to, maxPoints = 600, tags = [] } = {}) {
  const params = new URLSearchParams({ metric, max_points: String(maxPoints) });
  if (device) params.set("device", device);
  if (from !== undefined) params.set("from", String(Math.round(from)));
  if (to !== undefined) params.set("to", String(Math.round(to)));
  for (const tag of tags) params.append("tag", tag);
  return api(`/api/query?${params}`);
}

// One WebSocket for the whole page; views add handlers and say what they want to see.
class LiveFeed {
  constructor() {
    this.handlers = new Set();
    this.ws = null;
    this.subscription = { metrics: null, devices: null, alerts: true };
    this.retry = 500;
    this.state = "connecting";
    this.onState = () => {};
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = getToken();
    const suffix = token ? `?token=${encodeURIComponent(token)}` : "";
    const live = new URL(url("/api/live"));
    const ws = new WebSocket(`${scheme}://${live.host}${live.pathname}${suffix}`);
    this.ws = ws;
    ws.onopen = () => {
      this.retry = 500;
      this.setState("on");
      ws.send(JSON.stringify({ subscribe: this.subscription }));
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const handler of this.handlers) {
        try {
          handler(message);
        } catch (err) {
          console.error(err);
        }
      }
    };
    ws.onclose = () => {
      this.setState("off");
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  subscribe({ metrics = null, devices = null } = {}) {
    this.subscription = { metrics, devices, alerts: true };
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ subscribe: this.subscription }));
    }
  }

  on(handler) {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }
}

export const live = new LiveFeed();

// Run a state-changing call; asks for the token first when there is none, or when refused.
export async function withToken(call) {
  if (!getToken() && !(await window.hubAskToken())) return null;
  try {
    return await call();
  } catch (err) {
    if (err.status === 401 && (await window.hubAskToken())) return call();
    throw err;
  }
}
