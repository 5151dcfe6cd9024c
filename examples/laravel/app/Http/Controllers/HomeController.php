<?php

declare(strict_types=1);

namespace App\Http\Controllers;

use Illuminate\Contracts\View\View;
use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;
use Illuminate\Routing\Controller;

final class HomeController extends Controller
{
    public function home(Request $request): View
    {
        $visits = (int) $request->session()->get('visits', 0) + 1;
        $request->session()->put('visits', $visits);
        return view('home', ['visits' => $visits, 'worker' => getmypid()]);
    }

    public function time(): JsonResponse
    {
        return response()->json(['time' => now()->toAtomString(), 'worker' => getmypid()]);
    }
}
