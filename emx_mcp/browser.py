"""The memory browser: a few server-rendered pages at /ui where a person sees what their agents remember.

Namespaces and their sessions; a session's timeline (episodes in order, each boundary's surprise);
search with the filters of `recall`; forget, after a confirmation page; index health with plots
(inverted-list sizes, measured recall over time, episodes per day). Plain HTML and inline SVG:
no script, no front-end build.

Access follows the MCP endpoint's rules. Without EMX_AUTH_TOKEN (a loopback bind) the pages are
open, as /mcp is. With a token, a request needs `Authorization: Bearer <token>` or the session
cookie that /ui/login sets after the token is typed in (HttpOnly, SameSite=Strict, holding an
HMAC of the token, never the token). The Host header is checked as for /mcp. A form that changes
data (forget) carries a CSRF token derived from the server's secret, and a cross-site Origin is
refused.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from emx_mcp import rendering
from emx_mcp.access import ADMIN, LOCAL, TOKEN_PATTERN, AccessDenied, Grant, current_grant
from emx_mcp.coalescing import off_loop
from emx_mcp.config import Settings
from emx_mcp.errors import EmxError
from emx_mcp.schemas import (
    EPISODES_PAGE,
    MAX_FORGET_IDS,
    BrowsedEpisode,
    ForgetRequest,
    RecalledEvent,
    RecallRequest,
    check_namespace,
    parse,
)
from emx_mcp.service import MemoryService
from emx_mcp.transport import BearerToken, auth_options, transport_security

COOKIE = "emx_ui"
Page = Callable[[Request], Awaitable[Response]]

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7fb}
header{background:#2d4a7a;color:#fff;padding:10px 24px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none}header b{font-size:17px}
main{padding:18px 24px;max-width:1100px}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border-bottom:1px solid #e3e6ee;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#eef1f7;font-weight:600}
.ep{background:#fff;border:1px solid #e3e6ee;border-radius:6px;padding:8px 12px;margin:0 0 2px}
.boundary{display:flex;align-items:center;gap:8px;color:#5b6478;font-size:12px;margin:6px 0}
.bar{height:6px;background:#e4572e;border-radius:3px}
.meta{color:#5b6478;font-size:12px}.error{color:#b00020;font-weight:600}
.ok{color:#2e7d32}.warning{color:#c77700}.degraded{color:#b00020}
form.inline{display:inline}input,select{font:inherit;padding:3px 6px}
button{font:inherit;padding:4px 12px;border-radius:4px;border:1px solid #2d4a7a;background:#2d4a7a;color:#fff}
button.danger{background:#b00020;border-color:#b00020}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot b{display:block}
.plot{background:#fff;border:1px solid #e3e6ee;padding:8px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Browser:
    """The pages, bound to one service and the server's settings."""

    def __init__(self, service: MemoryService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        token = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
        verifier, _ = auth_options(settings, lambda: service.tokens)
        self._tokens: BearerToken | None = verifier
        # Without a token there is no shared secret: CSRF tokens come from this process's own.
        self._secret = token.encode() if token is not None else secrets.token_bytes(32)
        self._csrf = hmac.new(self._secret, b"emx-ui-csrf", hashlib.sha256).hexdigest()
        security = transport_security(settings)
        self._hosts = list(security.allowed_hosts) if security.enable_dns_rebinding_protection else None

    # -- access -------------------------------------------------------------------------------

    def _host_allowed(self, request: Request) -> bool:
        if self._hosts is None:
            return True
        host = request.headers.get("host", "")
        for allowed in self._hosts:
            if allowed.endswith(":*") and host.rsplit(":", 1)[0] == allowed[:-2]:
                return True
            if host == allowed:
                return True
        return False

    def _cookie_for(self, token_id: str) -> str:
        mac = hmac.new(self._secret, b"emx-ui-session:" + token_id.encode(), hashlib.sha256).hexdigest()
        return f"{token_id}.{mac}"

    def _grant(self, request: Request) -> Grant | None:
        """Who is asking: the token in the Authorization header, or the one the cookie names."""
        if self._tokens is None:
            return LOCAL
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self._tokens.grant_for(header[7:].strip())
        cookie = request.cookies.get(COOKIE, "")
        token_id = cookie.split(".", 1)[0]
        if not token_id or not hmac.compare_digest(cookie.encode(), self._cookie_for(token_id).encode()):
            return None
        if token_id == "admin":
            return ADMIN
        record = self.service.tokens.by_id(token_id)  # revoked: None, at once
        return None if record is None else record.grant()

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"

    def guarded(self, page: Page, changes_data: bool = False) -> Page:
        async def run(request: Request) -> Response:
            if not self._host_allowed(request):
                return HTMLResponse("Invalid Host header", status_code=421)
            grant = await off_loop(self._grant, request)
            if grant is None:
                if request.method == "GET":
                    return RedirectResponse("/ui/login?" + urlencode({"next": request.url.path}), 303)
                return HTMLResponse(layout("Sign in", login_form("", "Sign in first.")), status_code=401)
            if changes_data:
                form = await request.form()
                if not self._same_origin(request) or not hmac.compare_digest(
                    str(form.get("csrf", "")).encode(), self._csrf.encode()
                ):
                    return HTMLResponse(
                        layout("Refused", "<p class=error>This form did not come from this page.</p>"),
                        status_code=403,
                    )
            granted = current_grant.set(grant)
            try:
                return await page(request)
            except AccessDenied as exc:
                return HTMLResponse(layout("Refused", f"<p class=error>{esc(exc)}</p>"), status_code=403)
            except (EmxError, ValueError) as exc:
                return HTMLResponse(layout("Error", f"<p class=error>{esc(exc)}</p>"), status_code=400)
            finally:
                current_grant.reset(granted)

        return run

    async def login(self, request: Request) -> Response:
        if not self._host_allowed(request):
            return HTMLResponse("Invalid Host header", status_code=421)
        target = request.query_params.get("next", "/ui")
        if not target.startswith("/ui"):
            target = "/ui"
        if request.method == "GET":
            return HTMLResponse(layout("Sign in", login_form(target, "")))
        if not self._same_origin(request):
            return HTMLResponse(layout("Refused", "<p class=error>Cross-site sign-in refused.</p>"), 403)
        form = await request.form()
        given = str(form.get("token", ""))
        grant = LOCAL if self._tokens is None else await off_loop(self._tokens.grant_for, given)
        match = TOKEN_PATTERN.fullmatch(given)
        if grant is not None and grant is not ADMIN and grant is not LOCAL and match is None:
            # An OAuth access token expires; it goes in each request's Authorization header instead.
            problem = "Sign in with EMX_AUTH_TOKEN or an emx token; send OAuth access tokens as a header."
            return HTMLResponse(layout("Sign in", login_form(target, problem)), 401)
        if grant is not None:
            token_id = "admin" if match is None else match.group(1)
            response = RedirectResponse(target, 303)
            response.set_cookie(
                COOKIE, self._cookie_for(token_id), httponly=True, samesite="strict", path="/ui"
            )
            return response
        return HTMLResponse(layout("Sign in", login_form(target, "That is not this server's token.")), 401)

    # -- pages --------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        grant = current_grant.get()
        listed = await off_loop(self.service.namespaces)
        rows = "".join(
            f"<tr><td><a href='/ui/ns/{esc(n.namespace)}'>{esc(n.namespace)}</a></td>"
            f"<td>{n.events:,}</td></tr>"
            for n in listed.namespaces
            if grant.may_read(n.namespace)
        )
        body = (
            "<h1>Namespaces</h1><table><tr><th>namespace</th><th>events</th></tr>"
            + (rows or "<tr><td colspan=2>Nothing remembered yet.</td></tr>")
            + "</table>"
        )
        return HTMLResponse(layout("Namespaces", body))

    async def namespace(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        cursor = request.query_params.get("cursor") or None
        page = await off_loop(self.service.session_page, ns, cursor)
        recent = await off_loop(self.service.recent, ns, 5)
        rows = "".join(
            f"<tr><td><a href='{session_link(ns, s.session)}'>{esc(s.session)}</a></td>"
            f"<td>{s.episodes:,}</td>"
            f"<td>{esc(s.first[:19])}</td><td>{esc(s.last[:19])}</td></tr>"
            for s in page.sessions
        )
        more = (
            f"<p><a href='/ui/ns/{esc(ns)}?cursor={esc(page.next_cursor)}'>older sessions</a></p>"
            if page.next_cursor
            else ""
        )
        latest = "".join(
            f"<li><a href='{session_link(ns, e.session)}'>{esc(e.session)}</a> #{e.position}: "
            f"{esc(_short(e.text, 140))}</li>"
            for e in recent.episodes
        )
        body = (
            f"<h1>{esc(ns)}</h1><p><a href='/ui/ns/{esc(ns)}/health'>index health</a></p>"
            + search_form(ns, {})
            + f"<h2>Sessions ({page.total:,}, newest first)</h2>"
            + "<table><tr><th>session</th><th>episodes</th><th>first</th><th>last</th></tr>"
            + (rows or "<tr><td colspan=4>No sessions.</td></tr>")
            + "</table>"
            + more
            + (f"<h2>Latest episodes</h2><ul>{latest}</ul>" if latest else "")
        )
        return HTMLResponse(layout(ns, body, ns))

    async def session(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        session = request.query_params.get("s", "")
        start = request.query_params.get("start", "0")
        if not start.isdigit():
            raise ValueError("start must be a whole number of episodes.")
        page = await off_loop(self.service.session_episodes, ns, session, int(start), EPISODES_PAGE, True)
        items = []
        for e in page.episodes:
            if e.surprise is not None:
                width = max(2, int(e.surprise * 150))
                items.append(
                    f"<div class=boundary title='boundary surprise'><span class=bar style='width:{width}px'>"
                    f"</span>surprise {e.surprise:.3f}</div>"
                )
            elif e.position > 0:
                items.append("<div class=boundary>boundary (the episode before it was forgotten)</div>")
            items.append(
                f"<div class=ep id='e-{esc(e.id)}'><label><input type=checkbox name=ids value='{esc(e.id)}' "
                f"form=forget> <b>#{e.position}</b></label> "
                f"<span class=meta>{esc(e.timestamp[:19])} · {esc(e.id)}"
                f"{' · ' + esc(json.dumps(e.metadata)) if e.metadata else ''}{_links(e)}</span>"
                f"<div>{esc(e.text)}</div></div>"
            )
        nav = ""
        if page.next_start is not None:
            nav = f"<p><a href='{session_link(ns, session)}&start={page.next_start}'>next episodes</a></p>"
        body = (
            f"<h1>Session {esc(session)}</h1><p class=meta>{page.total:,} episodes in {esc(ns)}; "
            "a bar marks each boundary, as long as its surprise (how unexpected the episode's first "
            "sentence was after the previous episode).</p>"
            f"<form id=forget class=inline method=get action='/ui/ns/{esc(ns)}/forget'>"
            "<button class=danger>Forget the checked episodes</button></form> "
            f"<form class=inline method=get action='/ui/ns/{esc(ns)}/forget'>"
            f"<input type=hidden name=session value='{esc(session)}'>"
            "<button class=danger>Forget this whole session</button></form>" + "".join(items) + nav
        )
        return HTMLResponse(layout(f"Session {session}", body, ns))

    async def search(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        form = dict(request.query_params)
        arguments: dict[str, Any] = {"query": form.get("q", ""), "namespace": ns}
        for name in ("k", "contiguity", "max_chars"):
            if form.get(name):
                if not form[name].isdigit():
                    raise ValueError(f"{name} must be a whole number.")
                arguments[name] = int(form[name])
        for name in ("session", "since", "until", "mode", "now"):
            if form.get(name):
                arguments[name] = form[name]
        if form.get("include_superseded"):
            arguments["include_superseded"] = True
        if form.get("min_score"):
            arguments["min_score"] = float(form["min_score"])
        if form.get("metadata"):
            try:
                arguments["metadata"] = json.loads(form["metadata"])
            except ValueError:
                raise ValueError('metadata must be a JSON object, such as {"source": "ops"}.') from None
        request_ = parse(RecallRequest, arguments, self.settings.max_text_chars)
        found = rendering.results(await off_loop(self.service.recall, request_))
        rows = "".join(
            f"<div class=ep><b>{r.score:.3f}</b> <span class=meta>{esc(r.via)} · "
            f"<a href='{session_link(ns, r.session)}#e-{esc(r.id)}'>{esc(r.session)} #{r.position}</a> · "
            f"{esc(r.timestamp)} · {esc(r.id)}{_links(r)}</span><div>{esc(r.text)}</div></div>"
            for r in found.results
        )
        said = [rendering.window_line(found), found.note]
        body = (
            f"<h1>Search {esc(ns)}</h1>"
            + search_form(ns, form)
            + f"<p class=meta>{len(found.results)} results"
            + (f", {found.omitted} left out by max_chars" if found.omitted else "")
            + "</p>"
            + "".join(f"<p class=meta>{esc(line)}</p>" for line in said if line)
            + (rows or "<p>No memory matched.</p>")
        )
        return HTMLResponse(layout("Search", body, ns))

    async def forget_confirm(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        current_grant.get().check_write("forget")
        ids = request.query_params.getlist("ids")
        session = request.query_params.get("session")
        if not ids and not session:
            raise ValueError("check at least one episode to forget, or choose a whole session.")
        if session:
            page = await off_loop(self.service.session_episodes, ns, session, 0, 1)
            what = f"the whole session <b>{esc(session)}</b> ({page.total:,} episodes)"
            hidden = f"<input type=hidden name=session value='{esc(session)}'>"
        else:
            what = f"{len(ids)} episode(s): " + ", ".join(esc(i) for i in ids[:20])
            hidden = "".join(f"<input type=hidden name=ids value='{esc(i)}'>" for i in ids)
        body = (
            f"<h1>Forget?</h1><p>This deletes {what} from namespace {esc(ns)} for good.</p>"
            f"<form method=post action='/ui/ns/{esc(ns)}/forget'>{hidden}"
            f"<input type=hidden name=csrf value='{self._csrf}'>"
            "<button class=danger name=confirm value=yes>Yes, forget</button></form>"
            f"<p><a href='/ui/ns/{esc(ns)}'>No, go back</a></p>"
        )
        return HTMLResponse(layout("Forget?", body, ns))

    async def forget(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        current_grant.get().check_write("forget")
        form = await request.form()
        ids = [str(i) for i in form.getlist("ids")][:MAX_FORGET_IDS]
        session = form.get("session")
        arguments: dict[str, Any] = {"namespace": ns, "confirm": form.get("confirm") == "yes"}
        if session:
            arguments["session"] = str(session)
        else:
            arguments["ids"] = ids
        removed = await off_loop(self.service.forget, parse(ForgetRequest, arguments))
        body = (
            f"<h1>Forgotten</h1><p>Deleted {len(removed):,} episode(s) from {esc(ns)}.</p>"
            f"<p><a href='/ui/ns/{esc(ns)}'>Back to {esc(ns)}</a></p>"
        )
        return HTMLResponse(layout("Forgotten", body, ns))

    async def health(self, request: Request) -> Response:
        ns = current_grant.get().namespace(check_namespace(request.path_params["namespace"]))
        view = await off_loop(self.service.health_view, ns)
        h = view.report
        facts = [
            ("status", f"<span class={h.status}>{h.status}</span> " + esc("; ".join(h.reasons))),
            ("store", esc(h.store)),
            ("index", esc(f"{h.kind} ({h.index_type}), nlist {h.nlist}, nprobe {h.nprobe}")),
            ("vectors", f"{h.vectors:,} ({h.buffered:,} in the exact buffer); {h.events_in_log:,} events"),
            ("measured recall@10", esc(f"{h.measured_recall_at_10} (target {h.target_recall})")),
            ("capacity", esc(f"{h.capacity.events_in_store:,} of {h.capacity.max_events:,} events")),
            ("encoder", esc(h.encoder.backend if h.encoder else "-")),
            ("integrity", esc(h.integrity)),
        ]
        table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
        sizes = (
            bar_chart("Vectors per inverted list (sorted)", sorted(view.list_sizes, reverse=True), [])
            if view.list_sizes
            else plot_note("Vectors per inverted list", "Shown once the index is IVF (embedded store).")
        )
        recalls = [(r.at, r.recall) for r in view.history if r.recall is not None]
        recall_plot = (
            line_chart("Measured recall@10 over time", [v for _, v in recalls], [a[:16] for a, _ in recalls])
            if len(recalls) > 1
            else plot_note("Measured recall@10 over time", "Needs two measurements.")
        )
        days = bar_chart("Episodes per day", [n for _, n in view.daily], [d for d, _ in view.daily])
        body = (
            f"<h1>Index health: {esc(ns)}</h1><table>{table}</table>"
            f"<div class=plots>{sizes}{recall_plot}{days}</div>"
        )
        return HTMLResponse(layout("Index health", body, ns))

    def routes(self) -> list[Route]:
        g = self.guarded
        return [
            Route("/ui", g(self.home), methods=["GET"]),
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/ns/{namespace}", g(self.namespace), methods=["GET"]),
            Route("/ui/ns/{namespace}/session", g(self.session), methods=["GET"]),
            Route("/ui/ns/{namespace}/search", g(self.search), methods=["GET"]),
            Route("/ui/ns/{namespace}/forget", g(self.forget_confirm), methods=["GET"]),
            Route("/ui/ns/{namespace}/forget", g(self.forget, changes_data=True), methods=["POST"]),
            Route("/ui/ns/{namespace}/health", g(self.health), methods=["GET"]),
        ]


def routes(service: MemoryService, settings: Settings) -> list[Route]:
    """The memory browser's routes, for the HTTP and SSE apps."""
    return Browser(service, settings).routes()


# -- html ---------------------------------------------------------------------------------------


def layout(title: str, body: str, namespace: str | None = None) -> str:
    crumbs = f" &rsaquo; <a href='/ui/ns/{esc(namespace)}'>{esc(namespace)}</a>" if namespace else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · emx-mcp</title><style>{STYLE}</style></head><body>"
        f"<header><b>emx-mcp memory</b><span><a href='/ui'>namespaces</a>{crumbs}</span></header>"
        f"<main>{body}</main></body></html>"
    )


def login_form(target: str, problem: str) -> str:
    note = f"<p class=error>{esc(problem)}</p>" if problem else ""
    return (
        f"<h1>Sign in</h1>{note}<p>Type this server's EMX_AUTH_TOKEN.</p>"
        f"<form method=post action='/ui/login?{urlencode({'next': target or '/ui'})}'>"
        "<input type=password name=token size=40 autofocus> <button>Sign in</button></form>"
    )


def session_link(namespace: str, session: str) -> str:
    return f"/ui/ns/{esc(namespace)}/session?s={esc(quote(session, safe=''))}"


def search_form(namespace: str, values: dict[str, str]) -> str:
    def field(name: str, label: str, size: int = 10) -> str:
        return f"<label>{label} <input name={name} size={size} value='{esc(values.get(name, ''))}'></label> "

    mode = values.get("mode", "hybrid")
    checked = " checked" if values.get("include_superseded") else ""
    modes = "".join(
        f"<option{' selected' if m == mode else ''}>{m}</option>" for m in ("hybrid", "semantic", "lexical")
    )
    return (
        f"<form method=get action='/ui/ns/{esc(namespace)}/search'><p>"
        + field("q", "search", 40)
        + f"<label>mode <select name=mode>{modes}</select></label> "
        + field("k", "k", 3)
        + "<button>Search</button></p><p class=meta>"
        + field("session", "session")
        + field("since", "since")
        + field("until", "until")
        + field("metadata", "metadata (JSON)", 16)
        + field("contiguity", "contiguity", 2)
        + field("min_score", "min score", 4)
        + f"<label><input type=checkbox name=include_superseded value=1{checked}> include superseded</label>"
        + "</p></form>"
    )


def _links(item: BrowsedEpisode | RecalledEvent) -> str:
    """The supersession marks of an episode, for its meta line."""
    out = ""
    if item.superseded_by:
        out += f" · <b>superseded by {esc(item.superseded_by)}</b>"
    if item.supersedes:
        out += " · updates " + esc(", ".join(item.supersedes[:5]))
    return out


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# -- plots (inline SVG) -------------------------------------------------------------------------

W, H, PAD = 320, 170, 28


def plot_note(title: str, note: str) -> str:
    return f"<div class=plot><b>{esc(title)}</b><p class=meta>{esc(note)}</p></div>"


def bar_chart(title: str, values: Sequence[float], labels: Sequence[str]) -> str:
    if not values:
        return plot_note(title, "Nothing yet.")
    top = max(values) or 1
    step = (W - 2 * PAD) / len(values)
    bars = "".join(
        f"<rect x='{PAD + i * step:.1f}' y='{H - PAD - (v / top) * (H - 2 * PAD):.1f}' "
        f"width='{max(step - 1, 0.5):.1f}' height='{(v / top) * (H - 2 * PAD):.1f}' fill='#2d4a7a'>"
        f"<title>{esc(labels[i] + ': ' if labels else '')}{v:,}</title></rect>"
        for i, v in enumerate(values)
    )
    ends = _axis_labels(labels)
    return (
        f"<div class=plot><b>{esc(title)}</b><svg width={W} height={H} role=img aria-label='{esc(title)}'>"
        f"<line x1={PAD} y1={H - PAD} x2={W - PAD} y2={H - PAD} stroke='#889'/>{bars}"
        f"<text x=2 y={PAD} font-size=10>{top:,.0f}</text>{ends}</svg></div>"
    )


def line_chart(title: str, values: Sequence[float], labels: Sequence[str]) -> str:
    low, high = min(min(values), 0.8), 1.0
    span = (high - low) or 1
    step = (W - 2 * PAD) / max(len(values) - 1, 1)
    points = " ".join(
        f"{PAD + i * step:.1f},{H - PAD - (v - low) / span * (H - 2 * PAD):.1f}" for i, v in enumerate(values)
    )
    return (
        f"<div class=plot><b>{esc(title)}</b><svg width={W} height={H} role=img aria-label='{esc(title)}'>"
        f"<line x1={PAD} y1={H - PAD} x2={W - PAD} y2={H - PAD} stroke='#889'/>"
        f"<polyline points='{points}' fill=none stroke='#e4572e' stroke-width=2/>"
        f"<text x=2 y={PAD} font-size=10>{high:.2f}</text><text x=2 y={H - PAD} font-size=10>{low:.2f}</text>"
        f"{_axis_labels(labels)}</svg></div>"
    )


def _axis_labels(labels: Sequence[str]) -> str:
    if not labels:
        return ""
    first = f"<text x={PAD} y={H - 8} font-size=10>{esc(labels[0])}</text>"
    last = f"<text x={W - PAD} y={H - 8} font-size=10 text-anchor=end>{esc(labels[-1])}</text>"
    return first + (last if len(labels) > 1 else "")
