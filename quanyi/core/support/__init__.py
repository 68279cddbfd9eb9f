"""Support: buyers' requests to a human (tickets), forwarded to the operators and answered in chat."""
