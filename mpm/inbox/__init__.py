"""Incoming SMS: what a reply makes happen, and the inbox from which staff read and answer them."""
