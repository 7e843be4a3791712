-- One database per service; each service applies its own migrations at start.
CREATE DATABASE orders;
CREATE DATABASE inventory;
-- Runs only when the volume is new: an existing volume needs it made by hand.
CREATE DATABASE notifications;
