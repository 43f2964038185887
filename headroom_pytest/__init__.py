"""Headroom's pytest plugin: agent test suites against recorded model-API answers (cassettes).

Registered as the `headroom` pytest11 entry point; see `plugin.py` for the fixture and options.
"""

# Where the control addon (control.py) answers the plugin, on the proxy's own listeners.
PREFIX = "/__headroom_pytest__/"
