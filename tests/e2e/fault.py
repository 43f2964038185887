"""Test-only mitmproxy addon: makes Headroom's engine fail on requests that carry
`x-test-fault: 1`, to prove end to end that an internal error forwards the client's bytes."""

from mitmproxy import ctx


class Fault:
    def running(self) -> None:
        headroom = ctx.master.addons.get("headroom")
        engine = headroom.engine
        original = engine._process

        def faulty(req, fields, plan, state):
            if any(n.lower() == b"x-test-fault" for n, _ in req.fields):
                raise RuntimeError("injected fault")
            return original(req, fields, plan, state)

        engine._process = faulty


addons = [Fault()]
