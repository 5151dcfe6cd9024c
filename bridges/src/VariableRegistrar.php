<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/**
 * PHP's php_register_variable_ex() in PHP: how a request variable name
 * such as "a.b[x][]" lands in $_POST, $_FILES or $_COOKIE (dots and
 * spaces of the top-level name become "_", brackets nest, "[]" appends,
 * an unterminated "[" becomes "_", max_input_nesting_level applies).
 */
final class VariableRegistrar
{
    /**
     * @param array<array-key, mixed> $track the array to register into
     * @param mixed $value
     * @param bool $firstWins top-level plain names already set are kept (cookies)
     */
    public static function register(array &$track, string $name, $value, bool $firstWins = false): void
    {
        $name = ltrim($name, ' ');
        $nul = strpos($name, "\0");
        if ($nul !== false) {
            $name = substr($name, 0, $nul);
        }
        $bracket = strpos($name, '[');
        $base = strtr($bracket === false ? $name : substr($name, 0, $bracket), ' .', '__');
        if ($base === '') {
            return;
        }
        if ($firstWins && self::isMangledSecurePrefix($name, $base)) {
            return;
        }
        if ($bracket === false) {
            self::assign($track, $base, $value, $firstWins);
            return;
        }

        $maxNesting = (int) ini_get('max_input_nesting_level') ?: 64;
        $index = $base;
        $table = &$track;
        $pos = $bracket; // at a '['
        $level = 0;
        $length = strlen($name);
        while (true) {
            if (++$level > $maxNesting) {
                unset($track[$base]);
                if (!ini_get('display_errors')) {
                    Log::startupWarning(
                        "Input variable nesting level exceeded $maxNesting. "
                        . 'To increase the limit change max_input_nesting_level in php.ini.'
                    );
                }
                return;
            }
            $start = $pos + 1;
            $cursor = $start;
            if ($cursor < $length && $name[$cursor] === ' ') {
                $cursor++;
            }
            if ($cursor < $length && $name[$cursor] === ']') {
                $next = null;
                $close = $cursor;
            } else {
                $close = strpos($name, ']', $cursor);
                if ($close === false) {
                    // not an index: the '[' and what follows become part of a plain name
                    if ($level === 1) {
                        $index = $base . '_' . strtr(substr($name, $start), ' .[', '___');
                    }
                    break;
                }
                $next = substr($name, $start, $close - $start);
            }

            if ($index === null) {
                $table[] = [];
                $table = &$table[array_key_last($table)];
            } else {
                if (!isset($table[$index]) || !is_array($table[$index])) {
                    $table[$index] = [];
                }
                $table = &$table[$index];
            }
            $index = $next;
            $pos = $close + 1;
            if ($pos >= $length || $name[$pos] !== '[') {
                break;
            }
        }
        if ($level === 1 && $index !== null && !str_contains(substr($name, $bracket), ']')) {
            // "a[b" at top level: plain variable "a_b"
            self::assign($track, $index, $value, $firstWins);
            return;
        }
        if ($index === null) {
            $table[] = $value;
        } else {
            $table[$index] = $value;
        }
    }

    /**
     * @param array<array-key, mixed> $table
     * @param mixed $value
     */
    private static function assign(array &$table, string $key, $value, bool $firstWins): void
    {
        if ($firstWins && array_key_exists($key, $table)) {
            return;
        }
        $table[$key] = $value;
    }

    /** Cookie names that only become __Host-/__Secure- by mangling are refused (as PHP does). */
    private static function isMangledSecurePrefix(string $name, string $base): bool
    {
        foreach (['__Host-', '__Secure-'] as $prefix) {
            if (str_starts_with($base, $prefix) && !str_starts_with($name, $prefix)) {
                return true;
            }
        }
        return false;
    }
}
