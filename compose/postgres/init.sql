-- One database per service; each service applies its own migrations at start.
CREATE DATABASE orders;
CREATE DATABASE inventory;
