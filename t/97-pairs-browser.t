#!/usr/bin/perl

# The HTML page of mdm_watch_pairs in a real browser, headless Chromium
# at the width of a phone: the page loads with its style and script
# allowed by its Content-Security-Policy, shows the pairs grouped by
# phone, and typing a serial into the search box leaves only that pair's
# row visible, and only its phone's group; clearing the box shows all
# again; typing part of a phone UDID keeps that phone's watches; letters
# match without regard to case in ASCII only, as on the server.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Browser;
use MdmWatch::Pairs qw(store_pairs sample_pairs get_pairs);
use MdmWatch::Test;

plan skip_all => MdmWatch::Browser::missing()
    unless -x MdmWatch::Browser::binary();

my $t = MdmWatch::Test->new->setup(phone => 0, locations => <<'END');
        location = /pairs {
            mdm_watch_pairs;
        }
END

my @pairs = sample_pairs();
store_pairs($t, @pairs);

my $b = MdmWatch::Browser->new(width => 390, height => 844);
my $url = 'http://127.0.0.1:' . $t->port . '/pairs';
$b->load($url);

# the rows and groups that are shown, as the browser lays them out
my $VISIBLE = <<'END';
(function () {
    var shown = function (e) { return e.getClientRects().length > 0; };
    var code = function (e) { return e.querySelector('code').textContent; };
    return {
        rows: Array.from(document.querySelectorAll('tbody tr'))
            .filter(shown).map(code),
        groups: Array.from(document.querySelectorAll('section h2'))
            .filter(shown).map(code)
    };
})()
END

my $all = $b->js($VISIBLE);
is(scalar @{ $all->{rows} }, scalar @pairs, 'the page shows every pair');
is(scalar @{ $all->{groups} }, 4, 'the page shows one group per phone');
is($b->js('document.styleSheets.length'), 1,
    'the page\'s style is applied under its policy');
is($b->js('getComputedStyle(document.querySelector("thead")).display'),
    'none', 'at the width of a phone the table header is hidden');
is($b->js('document.documentElement.scrollWidth <= window.innerWidth'
    . ' ? 1 : 0'), 1, 'the page does not scroll sideways on a phone');

my ($target) = grep { $_->{serial} eq 'G7MNR3WQ9D' } @pairs;
$b->type('#q', 'g7mnr3');
my $found = $b->js($VISIBLE);
is_deeply($found->{rows}, [$target->{watch}],
    'typing part of a serial leaves only that pair\'s row visible');
is_deeply($found->{groups}, [$target->{phone}],
    'and only its phone\'s group');
is($b->js('document.getElementById("q").value'), 'g7mnr3',
    'the search box holds what was typed');

$b->js('var q = document.getElementById("q"); q.value = "";'
    . ' q.dispatchEvent(new Event("input"))');
is(scalar @{ $b->js($VISIBLE)->{rows} }, scalar @pairs,
    'clearing the box shows every pair again');

$b->type('#q', $pairs[0]{watch});
is_deeply($b->js($VISIBLE)->{rows}, [$pairs[0]{watch}],
    'typing a whole watch UDID leaves its row only');

$b->load("$url?q=G7MNR3WQ9D");
is_deeply($b->js($VISIBLE)->{rows}, [$target->{watch}],
    'submitting a serial looks the pair up on the server');

# letters are matched without regard to case in ASCII only, in the
# browser as on the server
{
    my $watch = '00008301-7000000000000001';
    store_pairs($t, { watch => $watch, phone => '00008150-0000000000000001',
        serial => "\xc3\x84SCII-W1" });
    my ($res) = get_pairs($t, 'serial=%C3%A4scii-w1');
    is($res->{status}, 404,
        'the server does not match a capital A with umlaut to a small one');
    ($res) = get_pairs($t, 'serial=%C3%84scii-w1');
    is($res->{status}, 200, 'the server matches ASCII letters of another case');

    $b->load($url);
    my $search = sub {
        $b->js('var q = document.getElementById("q"); q.value = "'
            . $_[0] . '"; q.dispatchEvent(new Event("input"))');
        return $b->js($VISIBLE)->{rows};
    };
    is_deeply($search->('\\u00e4scii-w1'), [],
        'the page does not match a capital A with umlaut to a small one');
    is_deeply($search->('\\u00c4scii-W1'), [$watch],
        'the page matches ASCII letters of another case');
}

$b->quit;
$t->finish;
