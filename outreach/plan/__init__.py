"""Planning: who is eligible (one SQL query), enrollment, send windows and the frequency cap, and
the scheduler pass that turns due steps into outbox rows and hands due rows to the workers."""
