<?php

declare(strict_types=1);

// The reference side of tests/superglobals.rs: nginx hands /dump and /status
// to this front controller, which runs the very same callable that ppm's
// callable bridge runs, so both sides execute identical application code.
// The test substitutes the fixture's absolute path for the placeholder.

$app = require '{{APP}}';
$app();
