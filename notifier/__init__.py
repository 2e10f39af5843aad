"""Notifier: evaluates event alarms (Aodh's API and semantics) and notifies the Consumer."""
