"""billing's writes, one module per concern; import from the module, not from here:

- ``ledger``: the quota ledger (open a period, reserve, settle, grant a paid period, top-up)
- ``subscriptions``: what a customer does (checkout, portal, close) and staff's comps
- ``webhooks``: Stripe's events (verify, apply, replay) and the reconcile that repairs lost ones
- ``plans``: the default plans and their Stripe product and price
- ``personal_data``: erasing personal data from stored Stripe events

Stripe or the sandbox is billing.gateway's business, chosen there once."""
