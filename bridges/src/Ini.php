<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** Reading ini settings. */
final class Ini
{
    /** A size setting ("8M", "2G", "512") in bytes; 0 when unset. */
    public static function bytes(string $key): int
    {
        $value = trim((string) ini_get($key));
        if ($value === '') {
            return 0;
        }
        if (function_exists('ini_parse_quantity')) {
            return (int) @ini_parse_quantity($value);
        }
        $number = (int) $value;
        return match (strtolower(substr($value, -1))) {
            'g' => $number << 30,
            'm' => $number << 20,
            'k' => $number << 10,
            default => $number,
        };
    }
}
