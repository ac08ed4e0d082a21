"""The velocity ledger: reservation semantics, atomicity (threads and processes), and a stateful
comparison with a simple model."""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from policies.document import AMOUNT_CONTEXT, VelocityLimit, load_policy
from policies.errors import (
    EvaluationInputError,
    ReservationError,
    VelocityError,
    VelocityLimitExceededError,
)
from policies.intent import load_intent
from policies.velocity import LedgerEntry, VelocityLedger, window_usage

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def limit(limit_id: str, wallet: str, window: int, maximum: str) -> VelocityLimit:
    return VelocityLimit.model_validate(
        {
            "id": limit_id,
            "wallet": wallet,
            "asset": "ETH",
            "window_seconds": window,
            "max_amount": maximum,
        }
    )


CAP = limit("cap", "w1", 3600, "10")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[VelocityLedger]:
    book = VelocityLedger(tmp_path / "velocity.db")
    yield book
    book.close()


def reserve(
    book: VelocityLedger,
    request_id: str,
    amount: str,
    *,
    now: datetime = T0,
    ttl: timedelta = HOUR,
    wallet: str = "w1",
) -> LedgerEntry:
    return book.reserve(
        request_id, wallet, "ETH", Decimal(amount), limits=[CAP], now=now, expires_at=now + ttl
    )


# --- lifecycle -----------------------------------------------------------------------------------


def test_reserve_commit_release_expire(ledger: VelocityLedger) -> None:
    entry = reserve(ledger, "a", "4")
    assert (entry.state, entry.amount, entry.at, entry.expires_at) == ("reserved", 4, T0, T0 + HOUR)
    reserve(ledger, "b", "3")
    reserve(ledger, "c", "2", ttl=timedelta(minutes=5))
    assert ledger.commit("a", now=T0 + timedelta(minutes=1)).state == "committed"
    assert ledger.release("b").state == "released"
    assert ledger.expire(T0 + timedelta(minutes=5)) == ("c",)
    assert ledger.entry("c") is not None and ledger.entry("c").state == "expired"  # type: ignore[union-attr]
    view = ledger.view(T0 + timedelta(minutes=6))
    assert [e.request_id for e in view.entries] == ["a"]
    assert ledger.entry("zzz") is None


def test_reserve_is_idempotent_per_request(ledger: VelocityLedger) -> None:
    first = reserve(ledger, "a", "6")
    again = reserve(ledger, "a", "6.000", now=T0 + timedelta(minutes=1))
    assert again == first
    assert len(ledger.view(T0).entries) == 1
    ledger.commit("a", now=T0)
    assert reserve(ledger, "a", "6").state == "committed"


def test_same_request_with_other_terms_is_refused(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "6")
    with pytest.raises(ReservationError, match="already reserved as 6 ETH from w1") as info:
        reserve(ledger, "a", "7")
    assert info.value.request_id == "a"
    with pytest.raises(ReservationError):
        reserve(ledger, "a", "6", wallet="w2")
    assert ledger.entry("a") == reserve(ledger, "a", "6")


def test_limit_exceeded_names_the_limit_and_stores_nothing(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "7")
    with pytest.raises(VelocityLimitExceededError) as info:
        reserve(ledger, "b", "3.000000000000000001")
    error = info.value
    assert (error.limit_id, error.wallet, error.asset) == ("cap", "w1", "ETH")
    assert (error.used, error.requested, error.maximum) == ("7", "3.000000000000000001", "10")
    assert "velocity limit 'cap'" in str(error)
    assert ledger.entry("b") is None
    assert reserve(ledger, "b", "3").state == "reserved"  # exactly at the limit


def test_limits_of_other_wallets_and_assets_do_not_interfere(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "10")
    other = ledger.reserve(
        "b",
        "w2",
        "ETH",
        Decimal(50),
        limits=[limit("w2cap", "w2", 3600, "50")],
        now=T0,
        expires_at=T0 + HOUR,
    )
    assert other.state == "reserved"
    usdc = ledger.reserve(
        "c", "w1", "USDC", Decimal(1000), limits=[CAP], now=T0, expires_at=T0 + HOUR
    )
    assert usdc.state == "reserved", "an ETH limit does not apply to USDC"


def test_released_and_expired_request_ids_are_never_reused(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "1")
    ledger.release("a")
    with pytest.raises(ReservationError, match="was released; request ids are never reused"):
        reserve(ledger, "a", "1")
    reserve(ledger, "b", "1", ttl=timedelta(seconds=10))
    ledger.expire(T0 + timedelta(seconds=10))
    with pytest.raises(ReservationError, match="was expired"):
        reserve(ledger, "b", "1")


def test_commit_after_expiry_is_refused_and_closes_the_reservation(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "4", ttl=timedelta(seconds=30))
    with pytest.raises(ReservationError, match="expired at 2026-03-02T12:00:30Z"):
        ledger.commit("a", now=T0 + timedelta(seconds=30))
    entry = ledger.entry("a")
    assert entry is not None and entry.state == "expired"
    with pytest.raises(ReservationError, match="the reservation was expired"):
        ledger.commit("a", now=T0)


def test_idempotent_reserve_of_a_lapsed_reservation_is_refused(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "4", ttl=timedelta(seconds=30))
    with pytest.raises(ReservationError, match="expired at"):
        reserve(ledger, "a", "4", now=T0 + timedelta(minutes=1))


def test_release_rules(ledger: VelocityLedger) -> None:
    with pytest.raises(ReservationError, match="no such request"):
        ledger.release("nope")
    with pytest.raises(ReservationError, match="no such request"):
        ledger.commit("nope", now=T0)
    reserve(ledger, "a", "1")
    ledger.commit("a", now=T0)
    with pytest.raises(ReservationError, match="already committed"):
        ledger.release("a")
    reserve(ledger, "b", "1")
    assert ledger.release("b", now=T0).state == "released"
    assert ledger.release("b").state == "released"
    with pytest.raises(ReservationError, match="cannot commit: the reservation was released"):
        ledger.commit("b", now=T0)


def test_budget_returns_on_release_expiry_and_window_roll(ledger: VelocityLedger) -> None:
    reserve(ledger, "a", "6", ttl=timedelta(minutes=10))
    reserve(ledger, "b", "4")
    with pytest.raises(VelocityLimitExceededError):
        reserve(ledger, "c", "1")
    ledger.release("b")
    reserve(ledger, "c", "4")
    # "a" lapses at 12:10 without an explicit expire(): the next reservation closes it.
    reserve(ledger, "d", "6", now=T0 + timedelta(minutes=10))
    assert ledger.entry("a").state == "expired"  # type: ignore[union-attr]
    ledger.commit("c", now=T0 + timedelta(minutes=11))
    ledger.commit("d", now=T0 + timedelta(minutes=11))
    with pytest.raises(VelocityLimitExceededError):
        reserve(ledger, "e", "1", now=T0 + timedelta(minutes=59))
    # "c" (12:00) leaves the window at 13:00; "d" (12:10) is still in it.
    assert reserve(ledger, "e", "4", now=T0 + HOUR).state == "reserved"


def test_out_of_order_clocks_cannot_open_a_gap(ledger: VelocityLedger) -> None:
    reserve(ledger, "late", "8", now=T0 + timedelta(minutes=30))
    # An earlier timestamp shares windows with the later entry: still refused.
    with pytest.raises(VelocityLimitExceededError):
        reserve(ledger, "early", "3", now=T0)
    reserve(ledger, "long-before", "3", now=T0 - timedelta(minutes=31))


def test_ledger_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    first = VelocityLedger(path)
    reserve(first, "a", "9.999999999999999999")
    first.commit("a", now=T0)
    first.close()
    second = VelocityLedger(path)
    entry = second.entry("a")
    assert entry is not None
    assert (entry.state, entry.amount) == ("committed", Decimal("9.999999999999999999"))
    with pytest.raises(VelocityLimitExceededError):
        reserve(second, "b", "0.000000000000000002")
    reserve(second, "b", "0.000000000000000001")
    second.close()


def test_view_horizon(ledger: VelocityLedger) -> None:
    reserve(ledger, "old", "1", now=T0 - timedelta(days=2), ttl=timedelta(days=5))
    reserve(ledger, "new", "1")
    assert [e.request_id for e in ledger.view(T0).entries] == ["new", "old"]
    assert [e.request_id for e in ledger.view(T0, horizon_seconds=86400).entries] == ["new"]


def test_bad_arguments(ledger: VelocityLedger) -> None:
    with pytest.raises(EvaluationInputError):
        ledger.reserve(
            "a", "w1", "ETH", Decimal(1), limits=[], now=datetime(2026, 1, 1), expires_at=T0
        )
    with pytest.raises(ReservationError, match="positive Decimal"):
        ledger.reserve("a", "w1", "ETH", Decimal(0), limits=[], now=T0, expires_at=T0 + HOUR)
    with pytest.raises(ReservationError, match="not after now"):
        ledger.reserve("a", "w1", "ETH", Decimal(1), limits=[], now=T0, expires_at=T0)
    assert ledger.entry("a") is None


def test_reserve_intent_uses_the_policy_limits(ledger: VelocityLedger) -> None:
    policy = load_policy(FIXTURES / "example.yaml")
    large = load_intent(FIXTURES / "intent-large.yaml")  # 5 ETH; the hot wallet may move 10/day
    ledger.reserve_intent(policy, large, now=T0, expires_at=T0 + HOUR)
    second = large.model_copy(update={"request_id": "wd-large-0002"})
    ledger.reserve_intent(policy, second, now=T0, expires_at=T0 + HOUR)
    third = large.model_copy(update={"request_id": "wd-large-0003"})
    with pytest.raises(VelocityLimitExceededError) as info:
        ledger.reserve_intent(policy, third, now=T0, expires_at=T0 + HOUR)
    assert info.value.limit_id == "hot-eth-daily"


# --- atomicity: threads and processes -------------------------------------------------------------


def _window_totals_ok(entries: list[LedgerEntry], limits: dict[str, list[VelocityLimit]]) -> bool:
    """Every window (t − w, t] ending at an entry time holds at most the limit."""
    for wallet, wallet_limits in limits.items():
        mine = [e for e in entries if e.wallet == wallet and e.state in ("reserved", "committed")]
        for cap in wallet_limits:
            window = timedelta(seconds=cap.window_seconds)
            for end in {e.at for e in mine}:
                total = Decimal(0)
                for e in mine:
                    if end - window < e.at <= end:
                        total = AMOUNT_CONTEXT.add(total, e.amount)
                if total > cap.max_amount:
                    return False
    return True


LIMITS = {
    "w1": [limit("w1-hour", "w1", 3600, "10"), limit("w1-10min", "w1", 600, "6")],
    "w2": [limit("w2-hour", "w2", 3600, "5")],
}
thread_ops = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.sampled_from(["w1", "w2"]),
        st.sampled_from(["1", "2.5", "4", "0.000000000000000001"]),
        st.sampled_from([5, 600, 5000]),
    ),
    st.tuples(st.just("commit")),
    st.tuples(st.just("release")),
    st.tuples(st.just("expire")),
    st.tuples(st.just("tick"), st.integers(1, 900)),
)


class _Clock:
    """A shared clock: reads are monotonic, but a thread may act on a reading after others
    have acted on later ones — the interleavings a real node sees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = 0

    def read(self) -> datetime:
        with self._lock:
            return T0 + timedelta(seconds=self._seconds)

    def tick(self, seconds: int) -> None:
        with self._lock:
            self._seconds += seconds


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(thread_ops, min_size=1, max_size=10), min_size=2, max_size=4))
def test_concurrent_interleavings_never_exceed_a_limit(plans: list[list[tuple[Any, ...]]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        book = VelocityLedger(Path(folder) / "v.db")
        clock = _Clock()
        start = threading.Barrier(len(plans))
        granted: list[str] = []
        refused: list[str] = []
        failures: list[BaseException] = []

        def run(thread: int, plan: list[tuple[Any, ...]]) -> None:
            mine: list[str] = []
            start.wait()
            try:
                for step, op in enumerate(plan):
                    now = clock.read()
                    if op[0] == "reserve":
                        request = f"t{thread}-{step}"
                        try:
                            book.reserve(
                                request,
                                op[1],
                                "ETH",
                                Decimal(op[2]),
                                limits=LIMITS[op[1]],
                                now=now,
                                expires_at=now + timedelta(seconds=op[3]),
                            )
                            granted.append(request)
                            mine.append(request)
                        except VelocityLimitExceededError:
                            refused.append(request)
                    elif op[0] == "commit" and mine:
                        # Lapsed or released: both legitimate outcomes here.
                        with contextlib.suppress(ReservationError):
                            book.commit(mine[-1], now=now)
                    elif op[0] == "release" and mine:
                        with contextlib.suppress(ReservationError):  # already committed
                            book.release(mine[-1], now=now)
                    elif op[0] == "expire":
                        book.expire(now)
                    elif op[0] == "tick":
                        clock.tick(op[1])
            except BaseException as exc:  # reported to the test thread below
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(i, plan)) for i, plan in enumerate(plans)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        entries = [book.entry(request) for request in granted]
        assert all(entry is not None for entry in entries)
        assert all(book.entry(request) is None for request in refused)
        assert _window_totals_ok([e for e in entries if e is not None], LIMITS)
        book.close()


def _process_worker(path: str, worker: int, results: Any) -> None:
    book = VelocityLedger(Path(path))
    granted = 0
    for index in range(8):
        try:
            book.reserve(
                f"p{worker}-{index}",
                "w1",
                "ETH",
                Decimal(1),
                limits=[CAP],
                now=T0,
                expires_at=T0 + HOUR,
            )
            granted += 1
        except VelocityError:
            pass
    book.close()
    results.put(granted)


def test_processes_sharing_the_file_never_exceed_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    VelocityLedger(path).close()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_process_worker, args=(str(path), worker, results))
        for worker in range(3)
    ]
    for process in workers:
        process.start()
    counts = [results.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert sum(counts) == 10, "24 attempts of 1 ETH against a 10 ETH limit: exactly 10 succeed"
    book = VelocityLedger(path)
    assert len(book.view(T0).entries) == 10
    book.close()


# --- the ledger equals a simple model -------------------------------------------------------------


class LedgerAgainstModel(RuleBasedStateMachine):
    """Random sequences of operations on one ledger and on a dictionary, compared step by step."""

    REQUESTS = ("r0", "r1", "r2", "r3", "r4", "r5")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.book = VelocityLedger(Path(self.folder.name) / "v.db")
        self.seconds = 0
        # request -> [wallet, amount, at_seconds, state, expires_seconds]
        self.model: dict[str, list[Any]] = {}

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def teardown(self) -> None:
        self.book.close()
        self.folder.cleanup()

    def _close_lapsed(self, wallet: str | None = None) -> None:
        for entry in self.model.values():
            lapsed = entry[3] == "reserved" and entry[4] <= self.seconds
            if lapsed and (wallet is None or entry[0] == wallet):
                entry[3] = "expired"

    def _expected_reserve(self, request: str, wallet: str, amount: Decimal, ttl: int) -> str:
        if request in self.model:
            entry = self.model[request]
            if (entry[0], entry[1]) != (wallet, amount) or entry[3] in ("released", "expired"):
                return "error"
            if entry[3] == "reserved" and entry[4] <= self.seconds:
                return "error"
            return "ok"
        saved = {key: list(value) for key, value in self.model.items()}
        self._close_lapsed(wallet)
        for cap in LIMITS[wallet]:
            used = sum(
                (
                    e[1]
                    for e in self.model.values()
                    if e[0] == wallet
                    and e[3] in ("reserved", "committed")
                    and self.seconds - cap.window_seconds < e[2] <= self.seconds
                ),
                Decimal(0),
            )
            if used + amount > cap.max_amount:
                self.model = saved  # the transaction rolled back
                return "limit"
        self.model[request] = [wallet, amount, self.seconds, "reserved", self.seconds + ttl]
        return "ok"

    @rule(seconds=st.integers(0, 1200))
    def advance(self, seconds: int) -> None:
        self.seconds += seconds

    @rule(
        request=st.sampled_from(REQUESTS),
        wallet=st.sampled_from(["w1", "w2"]),
        amount=st.sampled_from([Decimal(1), Decimal("2.5"), Decimal(4)]),
        ttl=st.sampled_from([1, 300, 4000]),
    )
    def reserve(self, request: str, wallet: str, amount: Decimal, ttl: int) -> None:
        expected = self._expected_reserve(request, wallet, amount, ttl)
        try:
            self.book.reserve(
                request,
                wallet,
                "ETH",
                amount,
                limits=LIMITS[wallet],
                now=self.now(),
                expires_at=self.now() + timedelta(seconds=ttl),
            )
            actual = "ok"
        except VelocityLimitExceededError:
            actual = "limit"
        except ReservationError:
            actual = "error"
        assert actual == expected

    @rule(request=st.sampled_from(REQUESTS))
    def commit(self, request: str) -> None:
        entry = self.model.get(request)
        expected = "error"
        if entry is not None and entry[3] == "committed":
            expected = "ok"
        elif entry is not None and entry[3] == "reserved":
            if entry[4] <= self.seconds:
                entry[3] = "expired"
            else:
                entry[3] = "committed"
                expected = "ok"
        try:
            self.book.commit(request, now=self.now())
            actual = "ok"
        except ReservationError:
            actual = "error"
        assert actual == expected

    @rule(request=st.sampled_from(REQUESTS))
    def release(self, request: str) -> None:
        entry = self.model.get(request)
        expected = "ok"
        if entry is None or entry[3] == "committed":
            expected = "error"
        elif entry[3] == "reserved":
            entry[3] = "released"
        try:
            self.book.release(request)
            actual = "ok"
        except ReservationError:
            actual = "error"
        assert actual == expected

    @rule()
    def expire(self) -> None:
        lapsed = sorted(
            r for r, e in self.model.items() if e[3] == "reserved" and e[4] <= self.seconds
        )
        self._close_lapsed()
        assert self.book.expire(self.now()) == tuple(lapsed)

    @invariant()
    def same_state(self) -> None:
        for request in self.REQUESTS:
            entry = self.book.entry(request)
            expected = self.model.get(request)
            if expected is None:
                assert entry is None
                continue
            assert entry is not None
            assert (entry.wallet, entry.amount, entry.state) == (
                expected[0],
                expected[1],
                expected[3],
            )
            assert entry.at == T0 + timedelta(seconds=expected[2])
        counting = sorted(
            r
            for r, e in self.model.items()
            if e[3] == "committed" or (e[3] == "reserved" and e[4] > self.seconds)
        )
        assert [e.request_id for e in self.book.view(self.now()).entries] == counting


LedgerAgainstModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None
)
test_ledger_equals_a_simple_model = LedgerAgainstModel.TestCase


def test_window_usage_is_pure_and_half_open() -> None:
    entries = [
        LedgerEntry("a", "w1", "ETH", Decimal(3), T0 - HOUR, "committed"),
        LedgerEntry(
            "b", "w1", "ETH", Decimal(2), T0 - HOUR + timedelta(microseconds=1), "committed"
        ),
        LedgerEntry("c", "w1", "ETH", Decimal(5), T0, "reserved", T0 + HOUR),
    ]
    assert window_usage(entries, wallet="w1", asset="ETH", window_seconds=3600, at=T0) == 7
    assert (
        window_usage(
            entries, wallet="w1", asset="ETH", window_seconds=3600, at=T0, exclude_request="c"
        )
        == 2
    )
    assert window_usage(entries, wallet="w1", asset="ETH", window_seconds=3600, at=T0 + HOUR) == 0
