"""Billing's job kinds (handlers are declared in module.py)."""

RENEW = "billing.renew"  # a subscription's period ends
TRIAL_ENDING = "billing.trial_ending"  # announce the end of a trial
EXPIRE_INCOMPLETE = "billing.expire_incomplete"  # a first payment never succeeded
FINALIZE_INVOICE = "billing.finalize_invoice"  # a period's draft invoice becomes final
COLLECT_PAYMENT = "billing.collect_payment"  # charge an open invoice (external: calls the provider)
PURGE = "billing.purge"  # daily: forget old inbound provider events
