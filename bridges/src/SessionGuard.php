<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * Keeps native sessions per request in a process that never ends one.
 *
 * PHP only reads the session cookie while its session id is unset, and
 * nothing unsets it between requests. So once a session has been used,
 * the id is set before each request from that request's cookie (or '' for
 * a fresh id), and the Set-Cookie PHP then sends merely repeating the id
 * the client already has is dropped, as PHP-FPM would not send it.
 */
final class SessionGuard
{
    private bool $enabled;

    private bool $touched = false;

    private ?string $presetId = null;

    public function __construct()
    {
        $this->enabled = extension_loaded('session');
    }

    /** Call with $_COOKIE filled, before the application runs. */
    public function beforeRequest(): void
    {
        $this->presetId = null;
        if (!$this->enabled) {
            return;
        }
        if (session_status() === PHP_SESSION_ACTIVE) {
            @session_write_close();
        }
        if (!$this->touched) {
            if (session_id() === '') {
                return; // never used: PHP reads the cookie itself
            }
            $this->touched = true;
        }
        $cookie = $_COOKIE[session_name()] ?? null;
        if (ini_get('session.use_cookies') && is_string($cookie) && $cookie !== '') {
            @session_id($cookie);
            $this->presetId = $cookie;
        } else {
            @session_id('');
        }
    }

    /**
     * Drops the session module's Set-Cookie that repeats the id sent by
     * the client.
     *
     * @param list<array{0: string, 1: string}> $headers
     * @return list<array{0: string, 1: string}>
     */
    public function filterHeaders(array $headers): array
    {
        if ($this->presetId === null) {
            return $headers;
        }
        $name = session_name();
        foreach ($headers as $i => [$header, $value]) {
            if (strcasecmp($header, 'Set-Cookie') !== 0) {
                continue;
            }
            $pair = explode(';', $value, 2)[0];
            $eq = strpos($pair, '=');
            if ($eq !== false
                && substr($pair, 0, $eq) === $name
                && urldecode(substr($pair, $eq + 1)) === $this->presetId
            ) {
                unset($headers[$i]);
                return array_values($headers);
            }
        }
        return $headers;
    }

    /** Writes and closes the session once the response is out. */
    public function afterResponse(): void
    {
        if (!$this->enabled) {
            return;
        }
        if (session_status() === PHP_SESSION_ACTIVE) {
            @session_write_close();
        }
        if (!$this->touched && session_id() !== '') {
            $this->touched = true;
        }
        unset($_SESSION);
    }
}
