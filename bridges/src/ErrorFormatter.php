<?php

declare(strict_types=1);

namespace Ppm\Runtime;

/** PHP's own wording for errors. */
final class ErrorFormatter
{
    /** What PHP logs for an uncaught throwable. */
    public static function throwable(\Throwable $e): string
    {
        if ($e instanceof \ParseError) {
            return "PHP Parse error:  {$e->getMessage()} in {$e->getFile()} on line {$e->getLine()}";
        }
        if ($e instanceof \CompileError) {
            return "PHP Fatal error:  {$e->getMessage()} in {$e->getFile()} on line {$e->getLine()}";
        }
        return "PHP Fatal error:  Uncaught $e\n  thrown in {$e->getFile()} on line {$e->getLine()}";
    }
}
