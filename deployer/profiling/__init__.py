"""Remote profiling people can trust: measurement context, robust statistics, sweeps, history,
comparisons and a self-contained HTML report. The board side is `board/context.sh`."""
