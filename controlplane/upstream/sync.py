"""The upstream loop: find DataHub's new execution requests for our pools, write our results
back, and pass DataHub's cancels on. One thread, three steps per tick (in this order), each
safe to repeat:

- discover (every poll interval): DataHub's requests newest first, back to the newest one the
  last scan saw (less a few minutes for the search index's lag) and never before this control
  plane first looked (less the lookback). Requests are dated by DataHub's clock, so the floors
  are reckoned in it too, as its answers' Date header shows it. A request is taken when its
  executorId names one of our pools and it has no result; `default` and every other id are
  never touched. Taken means adopted (our execution of the same id, queued on the pool;
  CANCELLED at once when DataHub's KILL is there already) or refused (a FAILURE says why; a
  CANCELLED when DataHub's KILL is there already, as for one adopted).
- signals (every tick): a KILL DataHub's UI wrote for a request we run is passed on as our own
  cancel, which the executor reads within its progress interval. The open requests' signals
  are read in batches (gms.py), a few reads a tick however many requests are queued. A request
  DataHub no longer has (deleted there, gms.py says how that is known) is cancelled here as a
  KILL would be and closed without a word to DataHub: a result written for it would bring the
  request back there, a result without an input. Before push, so no result of this tick goes
  to a request deleted since the last.
- push (every tick, at least once a second): each open request's current result is written to DataHub when it changed
  since the last write, for at most a poll interval a tick (the rest at the next, least recently
  written first); a final one closes the request (mirror.py). One DataHub refuses for good (a 4xx
  but 401/403/408/429) is written again at once, shortened, then minimal (results.py).

A step that fails does not hold back the others: DataHub's search failing still lets results
and cancels through. DataHub unreachable: nothing is lost (our executions go on; their latest
results are written when it is back) and nothing is taken twice (the mirror table decides). It
is logged once when it goes and once when it is back; a refused token names its file.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from vocabulary import statuses as S

from .. import entities as E
from ..errors import Conflict, Invalid
from ..service import ControlPlane, aspect_proposal
from ..tokens import ADMIN, Identity
from .claims import UpstreamClaims
from .gms import UpstreamError, UpstreamGms, UpstreamRefused, UpstreamUnreachable
from .mirror import DISPATCHED, Mirror, OpenRequest, digest
from .requests import Refusal, as_input, executor_id_of, request_id, requested_at
from .results import FORM_NAMES, MINIMAL, WHOLE, result_form

PAGE = 50  # a scan's pages start PAGE apart
# ... and each reads OVERLAP hits into the next: a request deleted in DataHub between two pages
# moves every hit after it up by one, and without the overlap the first hit of the next page was
# never read (lost for good when older than the floor). Up to OVERLAP deletions above a boundary,
# between the reads of its two pages, lose nothing (a user deletes one at a time; DataHub's GC
# deletes old requests by the thousand, and more than OVERLAP of those can still skip one); a
# request read twice is taken once (the mirror table).
OVERLAP = 5
MAX_PAGES = 20  # one discovery reads at most 1,000 requests; the next tick's goes on from there
MAX_RESULT_WINDOW = 10_000  # as deep as Elasticsearch pages by default (index.max_result_window): start + count
# A scan ends at its floor, an empty page or DataHub's total; at the latest after this many pages
# (about MAX_RESULT_WINDOW requests when full), so a DataHub whose total never comes down cannot
# keep one scan going, and new requests waiting, for good.
MAX_SCAN_PAGES = (MAX_RESULT_WINDOW - OVERLAP) // PAGE
INDEX_LAG_MS = 5 * 60 * 1000
CLOCK_SKEW_SAID_MS = 60_000  # DataHub's clock this far from ours is said in the log
TICK_S = 1.0
REFUSED_RETRY_S = 60.0  # a result DataHub refused (4xx) even in its least form is tried again after this
OUTAGE_AFTER_FAILURES = 3  # failed writes in a row that make the step an outage (the rest wait for the next tick)
FIRST_LOOK = "first_look_ms"
SYSTEM = Identity("upstream", ADMIN, None, None)  # what this loop writes here, it writes as an admin


def kill_signal(pool_id: str) -> dict[str, Any]:
    """DataHub's KILL of a request it cancelled before we took it, written as we take it: it
    names the executor DataHub routed the request to (POOL_ID), as DataHub's cancel does. A
    cancel once we hold the run goes through ControlPlane.cancel, which names the same."""
    return {"signal": "KILL", "executorId": pool_id, "createdAt": {"time": int(time.time() * 1000), "actor": SYSTEM.actor}}


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # the upstream GMS, as this control plane reaches it (…/gms or the GMS root)
    token_file: Path  # a token that may list execution requests, write their results, read secrets
    ingest_token_file: Path  # the token tasks' sinks write metadata with (ingest only)
    sink_url: str | None = None  # the GMS as executors reach it, when not URL
    poll_interval_s: float = 2.0
    lookback_s: float = 3600.0  # on the first start, requests this old are still taken


@dataclass
class _Scan:
    """A discovery scan under way (owned by the sync thread): DataHub's requests newest first
    from offset START down to FLOOR. NEWEST (capped at NOW, this control plane's clock when the
    scan began) becomes the cursor once the scan is complete. New requests arriving meanwhile
    push the rest down: read twice at worst, and the mirror table takes each once; requests
    deleted meanwhile pull the rest up, into the OVERLAP each page reads past its end."""

    floor: int
    now: int
    start: int = 0
    newest: int = 0
    pages: int = 0
    # DataHub failed a page of this scan past its first: the next discovery reads the first page
    # before it goes on, so a page DataHub keeps failing deep in a backlog delays no new request.
    failed_deep: bool = False


class UpstreamSync:
    def __init__(self, cp: ControlPlane, config: UpstreamConfig, gms: UpstreamGms | None = None) -> None:
        self.cp = cp
        self.config = config
        self.gms = gms or UpstreamGms(config.url, config.token_file)
        self.mirror = Mirror(cp.store)
        self.claims = UpstreamClaims(self.gms, self.mirror, ingest_token_file=config.ingest_token_file,
                                     sink_url=config.sink_url or config.url)
        self._problems: dict[str, str] = {}  # step -> what is wrong with DataHub for it now, logged once
        self._retry_after: dict[str, float] = {}
        self._untaken: set[str] = set()  # requests whose last result write DataHub failed to take: pushed last
        self._last_tried: dict[str, float] = {}  # request -> monotonic time its result was last written (or tried)
        # (request, whether the result is final) -> the form DataHub took last (results.py) and
        # how it refused the one before: later results of the request start there, a final one
        # afresh from WHOLE (it may fit where a long progress report did not).
        self._forms: dict[tuple[str, bool], tuple[int, str]] = {}
        self._forms_said: set[tuple[str, bool, int]] = set()  # (request, final, form) logged, once each
        self._refusal_said: set[str] = set()  # requests whose least form DataHub refused, logged once
        self._next_discovery = 0.0
        self._scan: _Scan | None = None
        self._clock_skew_said = False
        self._first_look = self._first_look_ms()

    def attach(self) -> None:
        """Claims of upstream runs answer with DataHub's sink and secrets from now on."""
        self.cp.executions.claim_context = self.claims

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick()
            # Wake for the next scan on time (the poll interval may be under a tick), else a tick.
            stop.wait(max(0.01, min(TICK_S, self._next_discovery - time.monotonic())))

    def tick(self) -> None:
        """One round of the three steps, each run whatever became of the others: a DataHub whose
        search (listExecutionRequests) fails, or is slower than the poll interval, still gets our
        results and passes its cancels on, which need only its aspects. Cancels before results: a
        request DataHub deleted is closed before a result could bring it back there."""
        if time.monotonic() >= self._next_discovery:
            self._next_discovery = time.monotonic() + self.config.poll_interval_s
            self._step("discover", self.discover)
        self._step("cancels", self.pass_cancels)
        self._step("push", self.push)

    def _step(self, name: str, step: Callable[[], object]) -> None:
        try:
            step()
        except UpstreamError as exc:
            self._failing(name, exc)
            return
        except Exception:  # the loop must go on; the next tick retries
            logger.exception("upstream sync step {} failed; retrying in {} s", name, TICK_S)
            return
        self._recovered(name)

    # discover ---------------------------------------------------------------------------------
    def discover(self) -> list[str]:
        """Take every new request for our pools; returns the ids taken. A scan reads at most
        MAX_PAGES pages, and no more after a poll interval (a slow DataHub must not hold back
        the results and cancels of the tick); one that has not reached its floor yet goes on at
        the next tick, and the cursor moves only when a scan is complete, so no request is left
        behind it."""
        pools = set(self.cp.pools.ids()) - {E.DEFAULT_EXECUTOR_ID}
        scan = self._scan
        taken: list[str] = []
        began = time.monotonic()
        if scan is not None and scan.failed_deep:
            _, newest_page = self.gms.execution_requests(0, PAGE)
            taken += self._take_new(newest_page, scan, pools)
            scan.failed_deep = False
        for _ in range(MAX_PAGES):
            try:
                total, page = self.gms.execution_requests(scan.start if scan else 0, PAGE + OVERLAP)
            except UpstreamError:
                if scan is not None and scan.start > 0:
                    scan.failed_deep = True
                raise
            if scan is None:  # a new scan's floor is set once DataHub has answered: its clock is in the answer
                scan = self._scan = self._new_scan()
            try:
                taken += self._take_new(page, scan, pools)
            except UpstreamError:
                # DataHub failing the page's KILL signals: the page is read again, as one it failed.
                if scan.start > 0:
                    scan.failed_deep = True
                raise
            except Exception:
                # Not DataHub's failure but ours on this page: start again from the newest, so
                # that a failure that repeats here never keeps new requests from being taken.
                self._scan = None
                raise
            # By the requests the page held (PAGE at most), not by PAGE: DataHub leaves out the hits
            # whose request is gone, so a short page may have held fewer hits than asked; the next
            # page then reads a few of them again. Either way it starts OVERLAP or more offsets
            # before the end of the one read.
            read_to = scan.start + len(page)
            scan.start += min(len(page), PAGE)
            scan.pages += 1
            if self._scan_ends(scan, total, page, read_to):
                self._scan = None
                if scan.newest:
                    self.mirror.saw(scan.newest)
                return taken
            if time.monotonic() - began >= self.config.poll_interval_s:
                break  # a slow DataHub: results and cancels go first, then the rest of the backlog
        self._next_discovery = time.monotonic()  # the rest of the backlog, after this tick's other steps
        return taken

    def _scan_ends(self, scan: _Scan, total: int, page: list, read_to: int) -> bool:
        """Whether SCAN, which has just read PAGE (hits up to offset READ_TO at least), is complete.
        A page shorter than asked for is no end: DataHub's search leaves out of a page the hits
        whose request no longer exists (deleted before its index caught up) and still counts them
        in total, so a short page can come with more behind it. Taken for the end, it moved the
        cursor over those, for good."""
        if not page or (total and read_to >= total):
            return True
        if any(isinstance(r, dict) and requested_at(r) < scan.floor for r in page):
            return True
        if scan.pages >= MAX_SCAN_PAGES:
            logger.warning("DataHub's execution requests: {} pages read (offset {} of the {} DataHub counts) without "
                           "reaching this scan's floor; the scan ends there, and requests of our pools below that "
                           "offset, older than the newest less {:.0f} min, are not taken", scan.pages, scan.start,
                           total, INDEX_LAG_MS / 60_000)
            return True
        return False

    def _new_scan(self) -> _Scan:
        # DataHub stores whatever requestedAt a client sends: one far ahead of now must not lift
        # the floor above every request made after it (a cursor lifted so before is capped too).
        # DataHub dates its requests by its own clock: one more than the lookback behind ours put
        # every new request below the first look's floor, for good (the floor only rises). Only
        # a DataHub behind moves the floor, down: one ahead is caught by the cap, and a wrong
        # Date far ahead must not lift the floor over the requests made since.
        # The first look is capped by our clock too: recorded while it was ahead (a host before
        # NTP set it), it held the floor above every request made until our clock caught up.
        ours = int(time.time() * 1000)
        behind = max(0, -self._datahub_clock_offset_ms(ours))
        now = ours - behind
        seen = min(self.mirror.newest_seen() or 0, now)
        first_look = min(self._first_look, ours)
        floor = max(first_look - behind - int(self.config.lookback_s * 1000), seen - INDEX_LAG_MS)
        return _Scan(floor=floor, now=now)

    def _datahub_clock_offset_ms(self, ours: int) -> int:
        """DataHub's clock less ours, as its last answer's Date shows it, at least (0 without a
        Date). A Date is truncated to the second: DataHub's clock read then was in [Date, Date + 1 s)."""
        date_s = self.gms.last_answer_date_s
        if date_s is None:
            return 0
        date_ms = int(date_s * 1000)
        offset = date_ms + 1000 - ours if date_ms + 1000 < ours else max(0, date_ms - ours)
        if abs(offset) >= CLOCK_SKEW_SAID_MS and not self._clock_skew_said:
            self._clock_skew_said = True
            logger.warning("DataHub's clock is {:.0f} s {} this machine's (its answers' Date header); discovery "
                           "reckons in DataHub's clock, as its requests are dated by it, but run times and the "
                           "results' timestamps will look off: set both clocks by NTP", abs(offset) / 1000,
                           "behind" if offset < 0 else "ahead of")
        elif abs(offset) < CLOCK_SKEW_SAID_MS and self._clock_skew_said:
            self._clock_skew_said = False
            logger.info("DataHub's clock agrees with this machine's again (within {:.0f} s)", CLOCK_SKEW_SAID_MS / 1000)
        return offset

    def _take_new(self, page: list[dict], scan: _Scan, pools: set[str]) -> list[str]:
        """Take PAGE's requests that are new, for our pools and without a result."""
        known = self.mirror.known([request_id(r) for r in page if isinstance(r, dict)])
        new = []
        for request in page:
            if not isinstance(request, dict):
                continue  # not a request (requests.py): nothing to take, and no reason to stop
            at = requested_at(request)
            scan.newest = max(scan.newest, min(at, scan.now))
            if at < scan.floor or executor_id_of(request) not in pools:
                continue  # too old to be new, or another executor's: never touched
            if request_id(request) in known or request.get("result"):
                continue
            new.append(request)
        # A request cancelled in DataHub before we took it (while this control plane was down,
        # or between two scans) is taken already cancelled, in one transaction, so the outbox
        # never queues it: adopted PENDING, it could be claimed and started before the next
        # step passed the cancel on. The page's signals are read together. A request deleted in
        # DataHub since the page was read is taken all the same, and closed at the next cancels
        # step (DataHub's search lists only requests that exist: its pages leave the others out).
        killed = self.gms.kills_requested([E.execution_urn(request_id(r)) for r in new])
        return [self._take(request, E.execution_urn(request_id(request)) in killed) for request in new]

    def _take(self, request: dict, cancelled: bool) -> str:
        execution_id, at = request_id(request), requested_at(request)
        decision = as_input(request)
        if not isinstance(decision, Refusal):
            urn = E.execution_urn(execution_id)
            proposals = [aspect_proposal(urn, E.EXECUTION_INPUT, decision)]
            pool_id = decision["executorId"]
            if cancelled:
                proposals.append(aspect_proposal(urn, E.EXECUTION_SIGNAL, kill_signal(pool_id)))

            def adopt(tx: sqlite3.Connection) -> None:
                # The pools were read before the page came: one deleted meanwhile would leave the
                # run stored for "an executor elsewhere", taken from DataHub and never run, ended
                # or cancelled. Judged in the transaction a pool's deletion also takes.
                if tx.execute("SELECT 1 FROM pool_queues WHERE pool_id=?", (pool_id,)).fetchone() is None:
                    raise Invalid(f"pool {pool_id} was deleted as the request was being taken")
                self.mirror.adopt(tx, execution_id, at, cancel_passed=cancelled)

            try:
                self.cp.ingest.ingest(proposals, SYSTEM, also=adopt)
                if cancelled:
                    logger.info("DataHub execution request {} taken for pool {}, cancelled in DataHub already",
                                execution_id, decision["executorId"])
                else:
                    logger.info("DataHub execution request {} taken for pool {}", execution_id, decision["executorId"])
                return execution_id
            except (Invalid, Conflict) as exc:
                decision = Refusal(S.INVALID_ARGUMENTS, str(exc))
        self.mirror.refuse(execution_id, at, decision.reason, decision.message, cancelled=cancelled)
        if cancelled:
            logger.info("DataHub execution request {} taken cancelled in DataHub already (it could not have run: "
                        "{}: {})", execution_id, decision.reason, decision.message)
        else:
            logger.warning("DataHub execution request {} refused ({}): {}", execution_id, decision.reason,
                           decision.message)
        return execution_id

    def _first_look_ms(self) -> int:
        with self.cp.store.transaction() as tx:
            tx.execute("INSERT OR IGNORE INTO upstream_cursor VALUES (?, ?)", (FIRST_LOOK, int(time.time() * 1000)))
            return tx.execute("SELECT value FROM upstream_cursor WHERE name=?", (FIRST_LOOK,)).fetchone()[0]

    # push -------------------------------------------------------------------------------------
    def push(self) -> int:
        """Write every changed result to DataHub; returns how many were written. A result DataHub
        failed to take (5xx, a write it does not show) is tried again at each tick, after the
        others: one request DataHub keeps failing held every result after it back.
        OUTAGE_AFTER_FAILURES failures in a row are an outage: the step fails (said once) rather
        than wait out every write's timeout. Writes stop after a poll interval, as a scan does:
        with a DataHub slow to take each, every changed result in one go held the tick's cancels
        and discovery back for as long as they took. The rest go first at the next tick (least
        recently written first), so results that change at every tick do not starve the others."""
        written = 0
        failed_in_a_row = 0
        began = time.monotonic()
        requests = self.mirror.open_requests()
        still_open = {request.execution_id for request in requests}
        self._untaken &= still_open
        self._last_tried = {execution_id: at for execution_id, at in self._last_tried.items()
                            if execution_id in still_open}
        self._forms = {key: form for key, form in self._forms.items() if key[0] in still_open}
        self._forms_said = {said for said in self._forms_said if said[0] in still_open}
        self._refusal_said &= still_open
        for request in sorted(requests, key=self._push_order):
            if request.result is None:
                continue
            if digest(request.result) == request.pushed_digest:
                continue
            if self._retry_after.get(request.execution_id, 0.0) > time.monotonic():
                continue
            if time.monotonic() - began >= self.config.poll_interval_s:
                break  # a slow DataHub: the rest at the next tick, after this tick's cancels
            self._last_tried[request.execution_id] = time.monotonic()
            try:
                self._write(request)
                self._check_kept(request)
            except UpstreamRefused as exc:
                if exc.status in (401, 403):
                    raise
                self._retry_after[request.execution_id] = time.monotonic() + REFUSED_RETRY_S
                if request.execution_id not in self._refusal_said:
                    self._refusal_said.add(request.execution_id)
                    logger.error("DataHub refused the result of {} in every form (results.py), or the read of it "
                                 "back ({}); DataHub shows the run open; tried again every {:.0f} s, said once",
                                 request.execution_id, exc, REFUSED_RETRY_S)
                continue
            except UpstreamUnreachable as exc:
                failed_in_a_row += 1
                if failed_in_a_row >= OUTAGE_AFTER_FAILURES:
                    raise
                if request.execution_id not in self._untaken:
                    logger.warning("DataHub did not take the result of {} ({}); tried again at each tick, after the "
                                   "other results", request.execution_id, exc)
                self._untaken.add(request.execution_id)
                continue
            failed_in_a_row = 0
            self._untaken.discard(request.execution_id)
            self._retry_after.pop(request.execution_id, None)
            self.mirror.written(request.execution_id, request.result)
            written += 1
        return written

    def _write(self, request: OpenRequest) -> None:
        """Write REQUEST's result in the first form DataHub takes (results.py), from the one it
        took last, and say once which form a refused result was written in. Raises UpstreamRefused
        when DataHub refuses even the least form (or our token)."""
        assert request.result is not None
        key = (request.execution_id, request.result.get("status") in S.FINAL)
        form, refused = self._forms.get(key, (WHOLE, ""))
        while True:
            try:
                self.gms.write_result(request.urn, result_form(request.result, form, request.execution_id, refused))
            except UpstreamRefused as exc:
                if exc.status in (401, 403) or form == MINIMAL:
                    raise
                form, refused = form + 1, (f"HTTP {exc.status}" if exc.status else str(exc)[:200])
                self._forms[key] = (form, refused)
                continue
            if form != WHOLE and (*key, form) not in self._forms_said:
                self._forms_said.add((*key, form))
                logger.warning("DataHub refused the {} result of {} ({}); it is written {} (results.py), the whole "
                               "result stays here", request.result.get("status"), request.execution_id, refused,
                               FORM_NAMES[form])
            return

    def _push_order(self, request: OpenRequest) -> tuple[bool, float]:
        """Least recently written first; those DataHub failed to take last time after all others."""
        return request.execution_id in self._untaken, self._last_tried.get(request.execution_id, 0.0)

    def _check_kept(self, request: OpenRequest) -> None:
        """A final result closes the request for good, so it counts as written only once DataHub
        shows it: DataHub's emitter takes any 200 (a captive portal's, a broken load balancer's)
        as GMS's. A progress result needs no check: the next one, or the final, replaces it."""
        assert request.result is not None
        status = request.result.get("status")
        if status not in S.FINAL:
            return
        shown = self.gms.result_status(request.urn)
        if shown != status:
            raise UpstreamUnreachable(f"DataHub at {self.config.url} answered the write of a {status} result but "
                                      f"shows {shown}; written again at the next tick")

    # cancels ----------------------------------------------------------------------------------
    def pass_cancels(self) -> list[str]:
        """Read the signals of the open requests in batches (a few reads a tick, however many are
        queued; gms.py), cancel here those DataHub's UI cancelled that are still PENDING or
        RUNNING, and close those DataHub no longer has. Returns the ids cancelled here.

        Looked at: every request still PENDING or RUNNING here, its cancel passed on or not (a
        run DataHub's user cancelled and then deleted still reports progress until its executor
        stops it), and every one whose last result DataHub failed or refused to take (written
        again later, maybe much later). A request that ended here since the last tick was looked
        at then, as a run."""
        requests = self.mirror.open_requests()
        waiting, watched = set(), set()
        for request in requests:
            if request.state == DISPATCHED and request.local_status in (S.PENDING, S.RUNNING):
                (watched if request.cancel_passed else waiting).add(request.execution_id)
            elif request.execution_id in self._untaken or request.execution_id in self._retry_after:
                watched.add(request.execution_id)
        signals = self.gms.signals([request.urn for request in requests if request.execution_id in waiting],
                                   [request.urn for request in requests if request.execution_id in watched])
        cancelled = []
        for request in requests:
            running = request.execution_id in waiting
            if request.urn in signals.gone:
                if running:
                    self.cp.cancel(request.execution_id, SYSTEM)
                    cancelled.append(request.execution_id)
                self.mirror.gone(request.execution_id)
                logger.warning("DataHub no longer has execution request {} (deleted there, by its cleanup of old "
                               "requests or by a user); {}, and nothing more of it is written to DataHub, where a "
                               "result would bring the request back without its input", request.execution_id,
                               "cancelling it here" if running else "closed here")
            elif running and request.urn in signals.killed:
                self.cp.cancel(request.execution_id, SYSTEM)
                self.mirror.cancel_passed_on(request.execution_id)
                logger.info("DataHub cancelled execution request {}; cancelling it here", request.execution_id)
                cancelled.append(request.execution_id)
        return cancelled

    # outages ----------------------------------------------------------------------------------
    def _failing(self, step: str, exc: UpstreamError) -> None:
        problem = str(exc)
        if problem not in self._problems.values():  # an outage fails every step the same way: once
            kind = "unreachable" if isinstance(exc, UpstreamUnreachable) else "refusing"
            logger.error("upstream DataHub {}: {}; runs here go on, results are written when it answers", kind, problem)
        self._problems[step] = problem

    def _recovered(self, step: str) -> None:
        if self._problems.pop(step, None) is not None and not self._problems:
            logger.info("upstream DataHub at {} answers again", self.config.url)
