<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Ppm\Runtime\BootstrapException;

/** Turns a --bridge value into a bridge. */
final class BridgeFactory
{
    private const CLASS_NAME = '/^[A-Za-z_\x80-\xff][\w\x80-\xff]*(\\\\[A-Za-z_\x80-\xff][\w\x80-\xff]*)*$/D';

    private const BUILT_IN = [
        'callable' => CallableBridge::class,
        'psr15' => Psr15Bridge::class,
        'static' => StaticBridge::class,
        'httpkernel' => HttpKernelBridge::class,
    ];

    public static function create(string $name): BridgeInterface
    {
        $class = self::BUILT_IN[strtolower($name)] ?? ltrim($name, '\\');
        if (!preg_match(self::CLASS_NAME, $class)) {
            throw new BootstrapException(self::unknown($name));
        }
        if (!class_exists($class)) {
            throw new BootstrapException(
                self::unknown($name) . " (no class $class; is it autoloadable by vendor/autoload.php?)"
            );
        }
        if (!is_subclass_of($class, BridgeInterface::class)) {
            throw new BootstrapException("bridge class $class does not implement " . BridgeInterface::class);
        }
        return new $class();
    }

    private static function unknown(string $name): string
    {
        return "unknown bridge '$name': use callable, psr15, static, httpKernel"
            . ' or the class name of a ' . BridgeInterface::class;
    }
}
