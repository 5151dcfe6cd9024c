<?php

declare(strict_types=1);

namespace App\Controller;

use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;
use Symfony\Component\HttpKernel\Kernel;

final class HomeController
{
    public function home(Request $request): Response
    {
        $session = $request->getSession();
        $visits = (int) $session->get('visits', 0) + 1;
        $session->set('visits', $visits);
        return new Response(
            sprintf("Hello from Symfony %s on ppm: visit %d, worker %d\n", Kernel::VERSION, $visits, getmypid()),
            200,
            ['Content-Type' => 'text/plain; charset=UTF-8']
        );
    }

    public function time(): JsonResponse
    {
        return new JsonResponse(['time' => date(DATE_ATOM), 'worker' => getmypid()]);
    }
}
