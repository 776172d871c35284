"""stationd daemon: process entry, actor runtime (bus, mailboxes), front door, publisher, config, CLIs."""
