"""Proposals from the models: a lane penalty where a carrier's delay risk stays well above its peers,
a capacity cap where a node's congestion risk at its cap stays above the ruleset's target, late
penalties that lower cost + lateness on a backtest, and a challenger's promotion.

Each kind of finding has its module (`lanes`, `capacity`, `weights`, `promotions`); `filing`
files a rule change with its backtest, and `run` is one pass over them all. It joins what no
single package owns: recent history and its point-in-time features (`features`),
the champion delay model (`training`), a backtest of the change (`rules`), and the approval loop
that every proposal must pass (`approvals`). Nothing here changes routing: it only files proposals.
"""
