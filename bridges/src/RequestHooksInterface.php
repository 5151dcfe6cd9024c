<?php

declare(strict_types=1);

namespace Ppm\Bridge;

use Symfony\Component\HttpFoundation\Request;

/**
 * Optional hooks of a BootstrapInterface implementation, run around each
 * request the httpKernel bridge handles.
 */
interface RequestHooksInterface
{
    /**
     * Runs before the kernel handles the request (a Symfony Request, or
     * Laravel's \Illuminate\Http\Request, which extends it).
     */
    public function beforeRequest(Request $request): void;

    /**
     * Runs after the response was sent and the kernel terminated (or after
     * a failed request): the place to reset state so that the next request
     * sees nothing of this one.
     */
    public function afterRequest(): void;
}
