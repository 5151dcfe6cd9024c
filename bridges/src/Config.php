<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** The first message of the control channel: what this worker serves. */
final class Config
{
    public function __construct(
        public readonly string $listen,
        public readonly bool $trustMaster,
        public readonly string $bridge,
        public readonly string $bootstrap,
        public readonly string $appDir,
        public readonly string $appEnv,
        public readonly bool $debug,
        public readonly int $slot,
    ) {
    }

    public static function fromJson(string $line): self
    {
        try {
            $data = json_decode($line, true, 16, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new BootstrapException('control channel: the config line is not JSON: ' . $e->getMessage());
        }
        if (!is_array($data) || ($data['type'] ?? null) !== 'config') {
            throw new BootstrapException('control channel: expected a {"type":"config"} line first');
        }
        foreach (['listen', 'bridge', 'app_dir'] as $key) {
            if (!is_string($data[$key] ?? null) || $data[$key] === '') {
                throw new BootstrapException("control channel: config has no '$key'");
            }
        }
        return new self(
            $data['listen'],
            (bool) ($data['trust_master'] ?? false),
            $data['bridge'],
            (string) ($data['bootstrap'] ?? ''),
            rtrim($data['app_dir'], '/') ?: '/',
            (string) ($data['app_env'] ?? 'prod'),
            (bool) ($data['debug'] ?? false),
            (int) ($data['slot'] ?? 0),
        );
    }
}
