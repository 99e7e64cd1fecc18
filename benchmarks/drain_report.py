"""The drain benchmark's report: the rounds table, the detailed Markdown, the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import database, harness


def rounds_table(rounds: list[dict[str, Any]]) -> str:
    """Rows/s of every phase of every round, and the round's ratio."""
    names = [phase["name"] for phase in rounds[0]["phases"]]
    rows = [[number, *(phase["rows_per_second"] for phase in result["phases"]),
             result["ratio"]] for number, result in enumerate(rounds, 1)]
    return harness.markdown_table(["round", *(f"{name}, rows/s" for name in names),
                                   "drain / ceiling"], rows)


def plot(rounds: list[dict[str, Any]], path: Path) -> None:
    """Rows/s of each phase by round, and the drain's progress over time."""
    figure, _ = harness.new_figure(10.0, 4.0)
    figure.clear()  # two panels instead of the one new_figure made
    bars, progress = figure.subplots(1, 2)
    names = [phase["name"].split(" (")[0].replace("raw ", "").replace("connection", "conn.")
             .removesuffix("s").replace("streams only", "streams\nonly")
             for phase in rounds[0]["phases"]]
    width = 0.8 / len(rounds)
    for index, result in enumerate(rounds):
        bars.bar([position + index * width for position in range(len(names))],
                 [phase["rows_per_second"] for phase in result["phases"]], width,
                 label=f"round {index + 1}")
    bars.set_xticks([position + width * (len(rounds) - 1) / 2 for position in range(len(names))],
                    names, fontsize=8)
    bars.set_ylabel("rows/s")
    bars.set_title("raw COPY against the drain")
    bars.legend(fontsize=8)
    for index, result in enumerate(rounds):
        times = [point[0] for point in result["drain_timeline"]]
        drained = [point[1] for point in result["drain_timeline"]]
        progress.plot(times, drained, label=f"round {index + 1}")
    progress.set_xlabel("seconds since the workers started")
    progress.set_ylabel("rows drained")
    progress.set_title("drain progress")
    progress.legend(fontsize=8)
    harness.save_figure(figure, path)


def markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    total = results["count"]
    lines = ["| phase | rows/s | seconds | client CPU µs/row | PostgreSQL CPU µs/row "
             "| Redis CPU µs/row | other CPU s | machine busy | note |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    best = max(phase["rows_per_second"] for phase in results["phases"]
               if phase["kind"] == "copy")
    notes = {"drain": f"{results['ratio']:.2f} x COPY", "floor": "floor, not a drain"}
    for phase in results["phases"]:
        spent = phase["cpu_seconds"]
        drain = phase["kind"] == "drain"
        client = spent["workers"] if drain else spent["benchmark"]
        note = notes.get(phase["kind"], "ceiling" if phase["rows_per_second"] == best else "")
        lines.append(
            f"| {phase['name']} | {phase['rows_per_second']:,.0f} | {phase['seconds']:.1f} | "
            f"{client / total * 1e6:.0f} | {spent['postgres'] / total * 1e6:.0f} | "
            f"{spent['redis'] / total * 1e6:.0f} | {spent['other']:.1f} | "
            f"{phase['machine_busy_share']:.0%} | {note} |")
    for phase in results["phases"]:
        # More than 3 % of the machine's capacity spent outside the measured processes.
        if phase["cpu_seconds"]["other"] > 0.03 * phase["seconds"] * results["machine"]["cores"]:
            busiest = ", ".join(f"{name} {seconds:.1f} s"
                                for name, seconds in phase["busiest_others"])
            lines.append(f"\nDuring {phase['name']}, {phase['cpu_seconds']['other']:.1f} CPU s "
                         "went to other processes or to kernel work no process is charged "
                         f"for (busiest other processes: {busiest or 'none left'}).")
    limit = results["bound"]
    lines += ["", f"The floor: reading, handing off and acknowledging the entries alone cost "
              f"{limit['floor_cpu_us']:.1f} µs of CPU per registration (client and Redis), the "
              f"COPY {limit['copy_cpu_us']:.1f}. A drain spends at least their sum per row, so "
              f"it reaches at most **{limit['at_copy_busy_share']:.2f} x** the COPY at the "
              f"COPY's machine busy share, {limit['at_full_machine']:.2f} x keeping every core "
              "busy."]
    lines += ["", f"{total:,} registrations, batches of {results['batch_size']}, "
              f"{results['partitions']} partitions, Redis appendfsync "
              f"{results['appendfsync']}; checks: "
              + ("all passed" if not results["failures"] else "; ".join(results["failures"])),
              "", "PostgreSQL: " + ", ".join(f"{name}={value}" for name, value
                                            in results["postgres_settings"].items()), ""]
    lines += _sizes(results) + _memory(results)
    aof = (f"AOF grew {results['aof_bytes_per_registration']:.0f} bytes per registration"
           if not results["aof_rewrites"]
           else f"the AOF was rewritten {results['aof_rewrites']} time(s)")
    lines += ["", f"Redis during the drain: {aof}.", ""]
    lines += _command_table("Redis command, drain", results["redis_commands"])
    lines += ["", "Redis during the floor (phase C, from a freshly rewritten AOF, automatic "
              f"rewrites off; rewrites during it: {results['floor_aof_rewrites']}):", ""]
    lines += _command_table("Redis command, floor", results["floor_redis_commands"])
    if "worker_profile" in results:
        lines += ["", "| worker self time, by package | share |", "|---|---:|"]
        lines += [f"| {name} | {share:.1%} |"
                  for name, share in results["worker_profile"]["packages"]]
        lines += ["", "| worker self time, by function | share |", "|---|---:|"]
        lines += [f"| `{name}` | {share:.1%} |"
                  for name, share in results["worker_profile"]["functions"]]
    for phase in ("copy", "drain"):
        if f"{phase}_statements" in results:
            lines += ["", f"| {phase}: statement (pg_stat_statements) | calls | ms | share |",
                      "|---|---:|---:|---:|"]
            lines += [f"| `{row['query']}` | {row['calls']} | {row['ms']:.0f} | "
                      f"{row['share']:.1%} |" for row in results[f"{phase}_statements"]]
    return "\n".join(lines) + "\n"


def _command_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    return [f"| {title} | calls | µs per registration |", "|---|---:|---:|",
            *(f"| {row['command']} | {row['calls']:,} | {row['usec_per_registration']:.1f} |"
              for row in rows)]


def _sizes(results: dict[str, Any]) -> list[str]:
    names = ("heap", *database.INDEXES, "toast_and_maps", "total")
    lines = ["| registrations, bytes per row | after the raw COPY | after the drain |",
             "|---|---:|---:|"]
    for name in names:
        lines.append(f"| {name} | {results['copy_sizes'][f'{name}_per_row']:.1f} | "
                     f"{results['sizes'][f'{name}_per_row']:.1f} |")
    return lines


def _memory(results: dict[str, Any]) -> list[str]:
    memory = results["redis_memory"]
    return ["", f"Redis: envelope {results['expected']['envelope_bytes']:.0f} bytes; "
            f"used_memory {memory['queued_per_registration']:.0f} bytes per queued "
            f"registration; after the drain {memory['after_drain_per_registration']:.0f} "
            "bytes per registration: per accepted one, its two verification jobs "
            f"{memory['jobs_per_accepted']:.0f} and its share of the hand-off markers "
            f"{memory['markers_per_accepted']:.1f}."]
