"""The data path: /serve, the route table, asynchronous predictions, their results and webhooks."""
