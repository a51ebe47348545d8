"""The ``linegate`` command: the embedded stack, development tokens and (as issues land) the
supplier, model, device-agent and evidence verbs. It talks to services over HTTP and NATS and
never imports them."""
