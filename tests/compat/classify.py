#!/usr/bin/env python3
"""Classifies one librdkafka test-runner run for `make compat`.

usage: classify.py NUM LOG REPORT_JSON EXIT_STATUS TIMED_OUT(0|1) LIMIT_S
prints one line: STATUS<TAB>REASON, STATUS one of PASSED FAILED TIMEOUT SKIPPED.
"""
import json
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAIL_BLOCK = re.compile(r'### Test "([^"]+)" failed at (\S+) at [^#]*###\n([^\n]*)')
SUMMARY_ROW = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*(\w+)\s*\|\s*[\d.]+s\s*\|\s?(.*)$", re.M)


RDK_LOG_PREFIX = re.compile(r"%\d\|[\d.]+\|(\w+)\|[^|]*\|\s*\[thrd:[^\]]*\]:\s*(?:[\w.:]+/\w+:\s*)?")
TEST_SAY_PREFIX = re.compile(r"\[[^\]/]+/\s*[\d.]+s\]\s*")


def squash(s, n=240):
    """One line, without librdkafka's log and TEST_SAY prefixes, at most n characters."""
    s = RDK_LOG_PREFIX.sub(lambda m: m.group(1) + ": ", s)
    s = TEST_SAY_PREFIX.sub("", s)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def main():
    num, log_path, report_path, rc, timed_out, limit = sys.argv[1:7]
    rc, timed_out = int(rc), timed_out == "1"
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = ANSI.sub("", f.read())
    except OSError:
        text = ""

    states, failstr = {}, {}
    for name, state, rest in SUMMARY_ROW.findall(text):
        if name.startswith(num + "_"):
            states[name] = state
            failstr[name] = rest.strip()
    try:
        with open(report_path, encoding="utf-8", errors="replace") as f:
            report = json.load(f)
        for name, t in report.get("tests", {}).items():
            if name.startswith(num + "_") and (t.get("state") != "SKIPPED" or name in states):
                states[name] = t.get("state", "?")
    except (OSError, ValueError):
        pass

    # First failure block: for this test, else any (e.g. <MAIN> leak check after the test).
    blocks = FAIL_BLOCK.findall(text)
    mine = [b for b in blocks if b[0].startswith(num + "_")] or blocks
    first_fail = f"{mine[0][1]}: {mine[0][2]}" if mine else ""
    timed = re.search(r"Test (\S+) timed out \(timeout set to (\d+) seconds\)", text)

    def last_hint(skip_timeout=False):
        for line in reversed(text.splitlines()):
            l = line.strip()
            if "Stats (#" in l or l.startswith("{"):  # statistics JSON dumps (0053)
                continue
            if skip_timeout and re.search(r"timed out|check_test_timeouts|SUMMARY|^[|#]|Test report|Killed|TEST FAILURE", l):
                continue
            if skip_timeout and l:
                return l
            if l and re.search(r"FAIL|[Ee]rror|Assertion|timed out|refused", l):
                return l
        lines = [l for l in text.splitlines() if l.strip()]
        return lines[-1] if lines else "no output"

    if timed_out:
        if first_fail:
            why = f"first error: {first_fail}"
        else:
            why = f"last log line: {last_hint(skip_timeout=True)}"
        print(f"TIMEOUT\tkilled by compat/run.sh after {limit}s; {squash(why)}")
        return
    failed = [n for n, s in states.items() if s in ("FAILED", "RUNNING")]
    if failed or (rc != 0 and any(s == "PASSED" for s in states.values())):
        if timed:
            reason = f"{timed.group(1)} timed out (runner limit {timed.group(2)}s)"
            if first_fail and "timed out" not in first_fail:
                reason += f"; first error: {first_fail}"
            else:
                reason += f"; last log line: {squash(last_hint(skip_timeout=True))}"
        else:
            reason = first_fail or next((failstr[n] for n in failed if failstr.get(n)), "") or last_hint()
        if not failed:
            reason = f"test passed but the runner exited {rc}: {reason}"
        print(f"FAILED\t{squash(reason)}")
        return
    if not states:
        sig = f" (signal {rc - 128})" if rc > 128 else ""
        print(f"FAILED\trunner exited {rc}{sig} without a result for {num}: {squash(last_hint())}")
        return
    if all(s == "SKIPPED" for s in states.values()):
        why = "; ".join(f"{n}: {failstr.get(n) or 'skipped'}" for n in sorted(states))
        print(f"SKIPPED\t{squash(why)}")
        return
    if rc == 0 and all(s in ("PASSED", "SKIPPED") for s in states.values()):
        skipped = [n for n, s in states.items() if s == "SKIPPED"]
        print("PASSED\t" + (f"(skipped: {', '.join(sorted(skipped))})" if skipped else ""))
        return
    print(f"FAILED\tunexpected states {states} exit {rc}: {squash(first_fail or last_hint())}")


if __name__ == "__main__":
    main()
