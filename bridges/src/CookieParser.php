<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * $_COOKIE exactly as PHP builds it from the Cookie header: split on ';',
 * leading whitespace of a name skipped, the name kept as sent (not
 * URL-decoded), the value decoded like rawurldecode() ('+' stays '+'),
 * array syntax honoured, the first occurrence of a plain name wins.
 */
final class CookieParser
{
    /** @return array<array-key, mixed> */
    public static function parse(string $header): array
    {
        $cookies = [];
        $maxVars = (int) ini_get('max_input_vars');
        $count = 0;
        foreach (explode(';', $header) as $pair) {
            if ($pair === '') {
                continue;
            }
            $pair = ltrim($pair, " \t\n\r\v\f");
            $eq = strpos($pair, '=');
            if ($pair === '' || $eq === 0) {
                continue;
            }
            if ($maxVars > 0 && ++$count > $maxVars) {
                Log::startupWarning(
                    "Input variables exceeded $maxVars. To increase the limit change max_input_vars in php.ini."
                );
                break;
            }
            if ($eq === false) {
                $name = $pair;
                $value = '';
            } else {
                $name = substr($pair, 0, $eq);
                $value = rawurldecode(substr($pair, $eq + 1));
            }
            VariableRegistrar::register($cookies, $name, $value, true);
        }
        return $cookies;
    }
}
