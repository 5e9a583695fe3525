"""Delivery adapters: the outbox worker, mail backends and Mailchimp sync."""
