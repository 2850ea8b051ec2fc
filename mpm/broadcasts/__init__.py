"""Broadcasts: one message to mini-grids, groups, types and selected people.

audience     who receives it (a set of person ids, built in SQL, never loaded whole)
placeholders [name], [surname], [mini_grid]… rendered per recipient
schedule     company time zone, quiet hours
lifecycle    compose → draft → confirm → (scheduled) → sending → done; pause, resume, cancel
fanout       the RQ jobs that turn the audience into Sms rows chunk by chunk and enqueue them
progress     counts per status, failures, and when a broadcast is done
"""
